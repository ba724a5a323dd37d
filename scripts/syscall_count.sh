#!/usr/bin/env bash
# Counts the memory and futex system calls of the main job under each allocator / thread
# setting (strace -f -c), to see where system time comes from.
#
#   scripts/syscall_count.sh [--steps=60] [--isa=AVX2|native] [--out=results/syscalls.md]
#
# Each setting runs `python train_and_eval_loop.py --method=contrastive --train_steps=N` once
# under `strace -f -c -e trace=futex,mmap,munmap,madvise,brk,mprotect`; the table lists the
# calls per setting (start-up and the evaluation included, the same for every setting, so the
# differences are the training steps'). strace slows the process; only the counts matter here.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=60
isa=AVX2
out=""
for arg in "$@"; do
  case "$arg" in
    --steps=*) steps="${arg#*=}" ;;
    --isa=*) isa="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    *) echo "error: unknown argument $arg (--steps=, --isa=, --out=)" >&2; exit 2 ;;
  esac
done
command -v strace >/dev/null || { echo "error: strace is not installed (apt-get install strace)" >&2; exit 2; }
# The setting names and their environments: allocator switch, then TensorFlow thread pools.
settings=(
  "system|DROC_ALLOCATOR=system"
  "tcmalloc|DROC_ALLOCATOR=tcmalloc"
  "tcmalloc, inter-op 1|DROC_ALLOCATOR=tcmalloc TF_NUM_INTEROP_THREADS=1"
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
isa_env=()
[[ "$isa" != native ]] && isa_env=(ONEDNN_MAX_CPU_ISA="$isa")
table="| setting | futex | mmap | munmap | madvise | brk | mprotect | seconds in these calls |
| --- | --- | --- | --- | --- | --- | --- | --- |"
for s in "${settings[@]}"; do
  name="${s%%|*}"
  read -r -a env_vars <<<"${s#*|}"
  log="$tmp/strace.txt"
  # The allocator re-exec happens inside the traced process (-f follows the exec).
  env -u LD_PRELOAD -u DROC_ALLOCATOR_EXEC "${isa_env[@]}" "${env_vars[@]}" \
    strace -f -c -e trace=futex,mmap,munmap,madvise,brk,mprotect -o "$log" \
    python train_and_eval_loop.py --method=contrastive --train_steps="$steps" \
    --model_dir="runs/syscalls/${name// /_}" --force_init --report=false >/dev/null 2>&1
  row=$(python - "$log" "$name" <<'EOF'
import sys
calls, secs = {}, 0.0
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) >= 5 and parts[-1] in ("futex", "mmap", "munmap", "madvise", "brk", "mprotect"):
        calls[parts[-1]] = int(parts[3])
        secs += float(parts[1])
cols = " | ".join(f"{calls.get(k, 0):,}" for k in ("futex", "mmap", "munmap", "madvise", "brk", "mprotect"))
print(f"| {sys.argv[2]} | {cols} | {secs:.1f} |")
EOF
)
  table+=$'\n'"$row"
  echo "$row"
done
header="Main job, --train_steps=$steps, oneDNN ISA: $isa; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n "$out" ]]; then
  printf '%s\n\n%s\n\nProduced by `scripts/syscall_count.sh --steps=%s --isa=%s`.\n' "$header" "$table" "$steps" "$isa" >"$out.tmp"
  mv "$out.tmp" "$out"
fi
