"""Reads valgrind memcheck logs (vg.<pid>) and reports every error with a frame in the shim's
sources (shim/preload/*.c, shim/proto/*.c, or libproxyshim.so without debug info). Prints the
totals as one JSON line; exit 1 when a shim error was found.
Usage: vgreport.py LOGDIR ROOT"""
import glob
import json
import os
import re
import sys

logdir, root = sys.argv[1], sys.argv[2]
shim_files = {os.path.basename(p) for p in glob.glob(root + "/shim/preload/*.c") + glob.glob(root + "/shim/proto/*.c")}
KINDS = re.compile(r"Invalid (read|write|free|size|alignment)|Conditional jump|uninitialised|Syscall param|"
                   r"Mismatched free|overlap|are definitely lost|are indirectly lost|Argument '\w+' of function|fishy|"
                   r"Invalid (file descriptor|memory pool)|Jump to the invalid|bad permissions")
frame = re.compile(r"^==\d+==\s+(?:at|by) 0x[0-9A-F]+: (.*)$")
procs = errors = shim_errors = 0
shim_blocks = []
programs = {}
for path in sorted(glob.glob(logdir + "/vg.*")):
    text = open(path, errors="replace").read()
    if "Memcheck" not in text:
        continue
    procs += 1
    m = re.search(r"==\d+== Command: (\S+)", text)
    prog = os.path.basename(m.group(1)) if m else "?"
    programs[prog] = programs.get(prog, 0) + 1
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    errors += int(m.group(1)) if m else 0
    # one block per error: lines from a non-frame title to the next blank line
    for block in re.split(r"\n==\d+== \n", text):
        lines = block.splitlines()
        if not any(frame.match(l) for l in lines):
            continue
        title = next((l for l in lines if not frame.match(l) and "==" in l and l.split("== ", 1)[-1].strip()), "")
        if not KINDS.search(block):
            continue  # not an error: a fatal signal's stack (the tests stop servers), summaries
        in_shim = any(("libproxyshim.so" in l or re.search(r"\((%s):\d+\)" % "|".join(map(re.escape, shim_files)), l))
                      for l in lines if frame.match(l))
        if in_shim:
            shim_errors += 1
            shim_blocks.append(path + "\n" + block)
for b in shim_blocks[:20]:
    print(b + "\n")
print(json.dumps({"processes": procs, "programs": programs, "errors_total": errors,
                  "errors_with_shim_frames": shim_errors}))
sys.exit(1 if shim_errors else 0)
