#!/usr/bin/env bash
# Installs the JavaScript clients that tests/clients_test.go drives (the
# openai, ollama and LangChain packages) with `npm ci` from the lockfile,
# and Node.js itself when it is missing. Does nothing when node_modules is
# already what the lockfile says.
set -euo pipefail
cd "$(dirname "$0")/../tests/clients"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	../../scripts/deps.sh nodejs npm
fi
if [ node_modules/.package-lock.json -nt package-lock.json ] 2>/dev/null; then
	echo "clients: tests/clients/node_modules is up to date"
	exit 0
fi
echo "clients: npm ci in tests/clients"
npm ci --no-audit --no-fund --loglevel=error
