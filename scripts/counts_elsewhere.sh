#!/bin/bash
# Do instruction counts hold on another CPU?  Counts one user space, carried whole, on two hosts.
#
#   scripts/counts_elsewhere.sh pack DIR    # here: DIR/xh.tar.xz (~50 MB) and the run script
#   DIR/run.sh REPS OUT                     # on any x86-64 Linux host (this one too), then compare
#                                           # OUT/counts.jsonl between hosts
#
# Under Valgrind the program sees Valgrind's canned CPU, not the host's (harness/counting.py), so
# a count should depend on the binaries and inputs only.  To test that and nothing else, the
# bundle carries every byte the counted process runs: this venv's Python, numpy and ONNX Runtime,
# the system's C libraries and dynamic loader, Valgrind's own binaries, the harness and the
# digits model in fp32/fp16/int8 (CI's counted rows), unpacked at one fixed path (/tmp/xh) and run
# with one fixed environment, so the two hosts differ only in their CPU and kernel.  run.sh also
# prints the CPUID the host answers natively and under Valgrind.
set -euo pipefail
[ "${1:-}" = pack ] && [ -n "${2:-}" ] || { sed -n 2,6p "$0"; exit 2; }
out=$(mkdir -p "$2" && cd "$2" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
py=$(cd "$root" && .venv/bin/python -c 'import sys; print(sys.base_prefix)')
site=$(cd "$root" && .venv/bin/python -c 'import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))')
ver=$(cd "$root" && .venv/bin/python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
B=/tmp/xh
rm -rf $B; mkdir -p $B/{py/bin,py/lib,site,src,lib,vg,models,jobs}
cp "$py/bin/python$ver" $B/py/bin/; cp "$py/lib/libpython$ver.so.1.0" $B/py/lib/ 2>/dev/null || true
cp -a "$py/lib/python$ver" $B/py/lib/
(cd $B/py/lib/python$ver && rm -rf test site-packages tkinter idlelib ensurepip lib2to3 turtledemo config-* unittest/test pydoc_data)
cp -a "$site/numpy" "$site/numpy.libs" "$site/onnxruntime" $B/site/
rm -rf $B/site/onnxruntime/{transformers,quantization,tools}
cp -a "$root/harness" $B/src/
find $B -name __pycache__ -prune -exec rm -rf {} +
# Not stripped: binutils' strip left numpy's OpenBLAS unloadable ("ELF load command address/offset
# not page-aligned").
for f in ld-linux-x86-64.so.2 libbz2.so.1.0 libc.so.6 libcrypto.so.3 libdl.so.2 libffi.so.8 libgcc_s.so.1 \
         liblzma.so.5 libm.so.6 libpthread.so.0 librt.so.1 libstdc++.so.6 libz.so.1 libutil.so.1; do
  cp -L "/usr/lib/x86_64-linux-gnu/$f" $B/lib/
done
vgbin=$(command -v valgrind); cp "$vgbin" $B/vg/valgrind; [ -f "$vgbin.bin" ] && cp "$vgbin.bin" $B/vg/
cp /usr/libexec/valgrind/{callgrind-amd64-linux,vgpreload_core-amd64-linux.so,default.supp} $B/vg/
(cd "$root" && .venv/bin/python - "$B" <<'EOF'
import json, shutil, sys
from pathlib import Path
from harness.counting import client_library, single_threaded
from harness.sources import ModelRequest
from harness.workspace import Workspace
B = Path(sys.argv[1])
ws = Workspace(quiet=True)
shutil.copy(client_library(Path(ws.store.root)), B / "lib" / "libharness_count.so")
for p in ("fp32", "fp16", "int8"):
    recipe = ws.engine(ModelRequest("digits"), "onnxruntime", p).runner.recipe()
    shutil.copy(recipe.kwargs["onnx_path"], B / "models" / f"digits_{p}.onnx")
    kwargs = single_threaded(recipe.kwargs) | {"onnx_path": f"/tmp/xh/models/digits_{p}.onnx"}
    (B / "jobs" / f"job_{p}.json").write_text(json.dumps(
        {"factory": recipe.factory, "kwargs": kwargs, "batches": [1, 8], "calls": 9, "warmup": 8,
         "library": "/tmp/xh/lib/libharness_count.so"}))
EOF
)
cat > $B/cpuid.c <<'EOF'
#include <cpuid.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  unsigned a, b, c, d, r[12]; char vendor[13] = {0}, brand[49] = {0};
  __cpuid(0, a, b, c, d); memcpy(vendor, &b, 4); memcpy(vendor + 4, &d, 4); memcpy(vendor + 8, &c, 4);
  for (unsigned i = 0; i < 3; i++) __cpuid(0x80000002 + i, r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]);
  memcpy(brand, r, 48);
  __cpuid_count(7, 0, a, b, c, d);
  printf("vendor=%s brand=%s avx2=%d avx512f=%d avx512vnni=%d\n", vendor, brand, !!(b & 1 << 5), !!(b & 1 << 16),
         !!(c & 1 << 11));
  return 0;
}
EOF
gcc -O1 -static -o "$out/cpuid" $B/cpuid.c
tar cf - -C /tmp xh | xz -6 -T2 > "$out/xh.tar.xz"
cat > "$out/run.sh" <<'EOF'
#!/bin/bash
set -u
reps=${1:-2}; out=${2:-/tmp/xh-out}; here=$(cd "$(dirname "$0")" && pwd)
rm -rf /tmp/xh; tar xJf "$here/xh.tar.xz" -C /tmp || exit 1
mkdir -p "$out"
{ grep -m1 'model name' /proc/cpuinfo; echo "native: $("$here/cpuid")"
  echo "under valgrind: $(VALGRIND_LIB=/tmp/xh/vg /tmp/xh/vg/valgrind --tool=callgrind --callgrind-out-file=/dev/null -q "$here/cpuid")"
  uname -r; } | tee "$out/host.txt"
cd /tmp/xh; pybin=$(ls /tmp/xh/py/bin/python3*)
for r in $(seq 1 "$reps"); do for p in fp32 fp16 int8; do
  w=/tmp/xh/w; rm -rf $w; mkdir -p $w
  env -i PATH=/usr/bin:/bin PYTHONHOME=/tmp/xh/py PYTHONPATH=/tmp/xh/site:/tmp/xh/src PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONHASHSEED=0 VALGRIND_LIB=/tmp/xh/vg \
    setarch x86_64 -R /tmp/xh/vg/valgrind --tool=callgrind --instr-atstart=no --smc-check=all-non-file --separate-threads=yes \
    --callgrind-out-file=$w/callgrind.out /tmp/xh/lib/ld-linux-x86-64.so.2 --library-path /tmp/xh/lib:/tmp/xh/py/lib \
    $pybin -m harness.counting /tmp/xh/jobs/job_$p.json $w/out.json > $w/log 2>&1 \
    || { echo "FAILED $p"; tail -20 $w/log; continue; }
  env -i PYTHONHOME=/tmp/xh/py PYTHONPATH=/tmp/xh/site:/tmp/xh/src /tmp/xh/lib/ld-linux-x86-64.so.2 \
    --library-path /tmp/xh/lib:/tmp/xh/py/lib $pybin -c "
import json, pathlib
from harness.counting import _dump_totals, trimmed_mean
t = _dump_totals(pathlib.Path('$w'), main_thread_only=True)
row = {'rep': $r, 'precision': '$p'}
for b in (1, 8):
    calls = [t[f'batch{b}.call{i}'] for i in range(9)]
    row[f'b{b}'] = trimmed_mean(calls); row[f'b{b}_calls'] = calls
print(json.dumps(row))" | tee -a "$out/counts.jsonl"
done; done
EOF
chmod +x "$out/run.sh"
du -sh "$out"
