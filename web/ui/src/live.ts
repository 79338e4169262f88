// Live updates: a counter that ticks whenever the API's cache changes (server-sent events
// at /api/events), with a polling fallback when the stream is down. Resources refetch on tick.
import { useEffect, useRef, useState } from "react";
import { getJson } from "./api";

export interface Resource<T> {
  data: T | null;
  error: string | null;
  loading: boolean;
}

const MIN_REFRESH_MS = 1000;
const FALLBACK_POLL_MS = 5000;

export type LiveStatus = "connecting" | "live" | "polling";

/** `tick` increases on each change the server announces (at most once a second). */
export function useLiveTick(): { tick: number; status: LiveStatus } {
  const [tick, setTick] = useState(0);
  const [status, setStatus] = useState<LiveStatus>("connecting");
  useEffect(() => {
    let last = 0;
    let pending: ReturnType<typeof setTimeout> | null = null;
    const bump = () => {
      const wait = last + MIN_REFRESH_MS - Date.now();
      if (wait <= 0) {
        last = Date.now();
        setTick((t) => t + 1);
      } else if (pending === null) {
        pending = setTimeout(() => {
          pending = null;
          last = Date.now();
          setTick((t) => t + 1);
        }, wait);
      }
    };
    let poll: ReturnType<typeof setInterval> | null = null;
    const startPolling = () => {
      setStatus("polling");
      if (poll === null) poll = setInterval(bump, FALLBACK_POLL_MS);
    };
    let source: EventSource | null = null;
    if (typeof EventSource === "undefined") {
      startPolling();
    } else {
      source = new EventSource("/api/events");
      source.addEventListener("update", () => {
        setStatus("live");
        if (poll !== null) {
          clearInterval(poll);
          poll = null;
        }
        bump();
      });
      // EventSource reconnects by itself; poll meanwhile so the page keeps moving.
      source.onerror = startPolling;
    }
    return () => {
      source?.close();
      if (poll !== null) clearInterval(poll);
      if (pending !== null) clearTimeout(pending);
    };
  }, []);
  return { tick, status };
}

/** Fetch `path` now and again on every tick; keeps the last good data when a refresh fails. */
export function useResource<T>(path: string | null, tick: number): Resource<T> {
  const [state, setState] = useState<Resource<T>>({ data: null, error: null, loading: path !== null });
  const current = useRef(path);
  current.current = path;
  useEffect(() => {
    if (path === null) {
      setState({ data: null, error: null, loading: false });
      return;
    }
    const ctrl = new AbortController();
    getJson<T>(path, ctrl.signal).then(
      (data) => {
        if (current.current === path) setState({ data, error: null, loading: false });
      },
      (err: Error) => {
        if (err.name === "AbortError") return;
        setState((s) => ({ data: s.data, error: err.message, loading: false }));
      },
    );
    return () => ctrl.abort();
  }, [path, tick]);
  return state;
}
