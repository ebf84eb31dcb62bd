#!/usr/bin/env bash
# The floor plan, checked: every `#include "ROOM/..."` in a room's sources must
# name the room itself or a room it may depend on. Rooms depend one way, top to
# bottom (ARCHITECTURE.md, docs/architecture.md):
#
#   tools/   every subcommand and main
#   daemon/  composition of everything below
#   fuse/    bpf/      the file system and shim; the probes (never each other)
#   peer/              the peer tier: membership, ownership, transports
#   policy/            pure placement and simulator
#   base/              the shared vocabulary: errors, units, paths, fds, clocks
#
# Usage: tools/check-deps.sh [--graph] [ROOT]
#   (default)  exit 0 when every include follows the plan; otherwise print each
#              offending include as FILE:LINE: ROOM -> ROOM and exit 1
#   --graph    print the room graph as found in the code (Mermaid): an arrow
#              wherever a room includes another, as docs/architecture.md shows it
# ROOT defaults to the repository holding this script. tests/ may include anything.
set -euo pipefail

# The one table of the plan: ROOM and the rooms it may include from.
declare -A ALLOWED=(
  [tools]="daemon fuse bpf peer policy base"
  [daemon]="fuse bpf peer policy base"
  [fuse]="base"
  [bpf]="base"
  [peer]="base"
  [policy]="base"
  [base]=""
)
ORDER=(tools daemon fuse bpf peer policy base)  # top to bottom; also the link order

graph=0
if [[ ${1:-} == --graph ]]; then
  graph=1
  shift
fi
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"

declare -A edges=()
bad=0
for room in "${ORDER[@]}"; do
  [[ -d $room ]] || continue
  allowed=" $room ${ALLOWED[$room]} "
  # Sources of the room: C++ and C, BPF programs included; generated files live in build/.
  while IFS= read -r hit; do
    file=${hit%%:*}
    rest=${hit#*:}
    line=${rest%%:*}
    target=$(sed -E 's/.*#[[:space:]]*include[[:space:]]+"([^"/]+)\/.*/\1/' <<<"${rest#*:}")
    [[ -n ${ALLOWED[$target]+x} ]] || continue  # not a room: a system or generated header
    [[ $target != "$room" ]] && edges["$room $target"]=1
    if [[ $allowed != *" $target "* ]]; then
      echo "$file:$line: $room -> $target is not in the floor plan ($room may include: ${ALLOWED[$room]:-nothing})" >&2
      bad=1
    fi
  done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"[^"/]+/' "$room" \
             --include='*.cc' --include='*.h' --include='*.c' 2>/dev/null || true)
done

if [[ $graph -eq 1 ]]; then
  echo '```mermaid'
  echo 'graph TD'
  for from in "${ORDER[@]}"; do
    for to in "${ORDER[@]}"; do
      [[ -n ${edges["$from $to"]:-} ]] && echo "  $from --> $to"
    done
  done
  echo '```'
fi
if [[ $bad -ne 0 ]]; then
  echo "check-deps: includes point up or sideways (see above); move the code to the lower room or pass the dependency in" >&2
  exit 1
fi
[[ $graph -eq 1 ]] || echo "check-deps: every include follows the floor plan (${ORDER[*]})"
