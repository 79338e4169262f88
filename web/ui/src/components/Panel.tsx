// A card with designed loading, error and empty states, so no section is ever blank.
import type { ReactNode } from "react";
import type { Resource } from "../live";

interface PanelProps<T> {
  title: string;
  id: string;
  res: Resource<T>;
  isEmpty?: (data: T) => boolean;
  empty?: ReactNode;
  aside?: ReactNode;
  children: (data: T) => ReactNode;
}

export function Panel<T>({ title, id, res, isEmpty, empty, aside, children }: PanelProps<T>) {
  let body: ReactNode;
  if (res.data === null && res.loading) {
    body = (
      <div className="state loading" role="status" aria-live="polite">
        <span className="spinner" aria-hidden="true" /> Loading {title.toLowerCase()}…
      </div>
    );
  } else if (res.data === null) {
    body = (
      <div className="state error" role="alert">
        <strong>Could not load {title.toLowerCase()}.</strong> {res.error ?? "No data."} Retrying automatically.
      </div>
    );
  } else if (isEmpty?.(res.data)) {
    body = <div className="state empty">{empty}</div>;
  } else {
    body = children(res.data);
  }
  return (
    <section className="panel" id={id} aria-labelledby={`${id}-title`}>
      <header className="panel-head">
        <h2 id={`${id}-title`}>{title}</h2>
        {aside}
      </header>
      {res.data !== null && res.error && (
        <p className="stale" role="status">
          Showing the last data received: {res.error}
        </p>
      )}
      {body}
    </section>
  );
}
