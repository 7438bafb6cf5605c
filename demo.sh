#!/usr/bin/env bash
# Thin wrapper for README's first command: `bootinit demo` (see bootinit/demo.py).
# Runs the installed console script, else `python3 -m bootinit` from this checkout (for
# when sudo's PATH does not reach the script pip installed). Arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")"
if command -v bootinit >/dev/null 2>&1; then
    exec bootinit demo "$@"
fi
for py in ${PYTHON:-} python3; do
    if "$py" -c 'import bootinit.cli, crc32c, pytap2' >/dev/null 2>&1; then
        exec "$py" -m bootinit demo "$@"
    fi
done
echo "demo.sh: bootinit is not installed for this user's python3: run" \
     "'python3 -m pip install -e .' (as the user sudo runs as), or .ci/run" >&2
exit 2
