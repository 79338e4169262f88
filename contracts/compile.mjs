// Compile contracts/SwarmCoordinator.sol with the npm `solc` package (solc-js) into
// contracts/build/SwarmCoordinator.json: ABI + bytecode of the logic contract and of its
// ERC-1967 proxy, the compiler version and settings, and the source's sha256.
//
// The output is deterministic (fixed settings, fixed source name, stable key order), so a
// test can recompile into a temp file and compare bytes to spot a stale committed artifact.
//
// Usage: node contracts/compile.mjs [--out PATH]
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "..", "package.json"));

const SOURCE_NAME = "SwarmCoordinator.sol";
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  // Cancun runs on anvil and on the public L2 testnets; newer opcodes are not needed.
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function parseArgs(argv) {
  let out = join(here, "build", "SwarmCoordinator.json");
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--out" && i + 1 < argv.length) {
      out = resolve(argv[++i]);
    } else if (argv[i] === "-h" || argv[i] === "--help") {
      console.log("usage: node contracts/compile.mjs [--out PATH]");
      process.exit(0);
    } else {
      console.error(`unknown argument ${argv[i]}; usage: node contracts/compile.mjs [--out PATH]`);
      process.exit(2);
    }
  }
  return { out };
}

function main() {
  const { out } = parseArgs(process.argv.slice(2));
  let solc;
  try {
    solc = require("solc");
  } catch (err) {
    console.error(`cannot load the npm package 'solc' (${err.message}); run 'npm install' in the repository root`);
    process.exit(1);
  }
  const source = readFileSync(join(here, SOURCE_NAME), "utf8");
  const input = { language: "Solidity", sources: { [SOURCE_NAME]: { content: source } }, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) {
    console.error(e.formattedMessage || e.message);
  }
  if (errors.length > 0) {
    console.error(`compilation failed with ${errors.length} error(s)`);
    process.exit(1);
  }
  const contracts = output.contracts[SOURCE_NAME];
  const pick = (name) => ({
    contractName: name,
    abi: contracts[name].abi,
    bytecode: "0x" + contracts[name].evm.bytecode.object,
    deployedBytecode: "0x" + contracts[name].evm.deployedBytecode.object,
  });
  const artifact = {
    ...pick("SwarmCoordinator"),
    proxy: pick("SwarmCoordinatorProxy"),
    compiler: { name: "solc-js", version: solc.version(), settings: SETTINGS },
    sourceName: SOURCE_NAME,
    sourceSha256: createHash("sha256").update(source, "utf8").digest("hex"),
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(artifact, null, 2) + "\n");
  const size = (contracts.SwarmCoordinator.evm.deployedBytecode.object.length / 2) | 0;
  console.log(`wrote ${out} (solc ${solc.version()}, SwarmCoordinator runtime ${size} bytes)`);
}

main();
