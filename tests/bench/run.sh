#!/bin/sh
# make bench: each section is a script of its own, run in turn; non-zero if any misses a target.
set -u
here=$(cd "$(dirname "$0")" && pwd)
status=0

# ---- protocol parser: instructions per pp_parse() (callgrind) ----
echo "== parse: instructions per successful pp_parse()"
"$here/parse_instructions.sh" || status=1

exit $status
