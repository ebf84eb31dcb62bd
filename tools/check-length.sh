#!/usr/bin/env bash
# No function longer than a screen: lists every function (lambdas at namespace
# scope included) of the rooms' sources over LIMIT lines (default 80) and exits 1
# when there is one. Tests and generated code (build/) are not checked.
# Usage: tools/check-length.sh [LIMIT [ROOT]]   (needs universal-ctags: make deps)
# ROOT defaults to the repository holding this script.
set -euo pipefail
limit=${1:-80}
cd "${2:-$(dirname "$0")/..}"
if ! command -v ctags >/dev/null || ! ctags --version 2>/dev/null | grep -q Universal; then
  echo "check-length: universal-ctags is missing (make deps installs it)" >&2
  exit 2
fi
mapfile -t files < <(find base policy peer fuse bpf daemon tools -type f \
                       \( -name '*.cc' -o -name '*.h' -o -name '*.c' \) 2>/dev/null | sort)
long=$(ctags --kinds-c++=f --kinds-c=f --fields=+ne -f - "${files[@]}" |
  awk -F'\t' -v limit="$limit" '{
    s = ""; e = ""
    for (i = 1; i <= NF; i++) { if ($i ~ /^line:/) s = substr($i, 6); if ($i ~ /^end:/) e = substr($i, 5) }
    if (s != "" && e != "" && e - s + 1 > limit) printf "%5d lines  %s:%s %s\n", e - s + 1, $2, s, $1
  }' | sort -rn)
if [[ -n $long ]]; then
  echo "check-length: functions over $limit lines (split them into named steps):" >&2
  echo "$long" >&2
  exit 1
fi
echo "check-length: no function over $limit lines in ${#files[@]} files"
