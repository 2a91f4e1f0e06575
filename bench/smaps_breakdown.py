#!/usr/bin/python3
"""Per-library breakdown of a process's RSS from /proc/PID/smaps (bench/idle_rss.sh).

One row per file mapped (all its segments summed; the libabsl_* libraries as one row), plus the
heap, anonymous mappings (thread stacks, malloc arenas, gRPC's pools) and the main stack; then
the thread names and the totals from /proc/PID/status. kB throughout."""
import collections
import os
import re
import sys

pid = sys.argv[1]
rows = collections.defaultdict(collections.Counter)
key = None
with open("/proc/%s/smaps" % pid) as f:
    for line in f:
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split(None, 5)
            name = parts[5].strip() if len(parts) > 5 else ""
            if name.startswith("/"):
                key = re.sub(r"\.so.*", "", os.path.basename(name))
                if key.startswith("libabsl_"):
                    key = "libabsl_* (all)"
            else:
                key = name or "anon"
            continue
        m = re.match(r"^(\w+):\s+(\d+) kB", line)
        if m and key:
            rows[key][m.group(1)] += int(m.group(2))
cols = ("Rss", "Private_Dirty", "Private_Clean", "Shared_Clean")
print("%-28s %8s %13s %13s %12s" % (("mapping",) + cols))
total = collections.Counter()
for k, c in sorted(rows.items(), key=lambda kv: -kv[1]["Rss"]):
    if c["Rss"]:
        print("%-28s %8d %13d %13d %12d" % ((k,) + tuple(c[x] for x in cols)))
        total.update(c)
print("%-28s %8d %13d %13d %12d" % (("TOTAL",) + tuple(total[x] for x in cols)))
tasks = os.listdir("/proc/%s/task" % pid)
names = collections.Counter(open("/proc/%s/task/%s/comm" % (pid, t)).read().strip() for t in tasks)
print("threads: %d (%s)" % (len(tasks), ", ".join("%s x%d" % kv for kv in sorted(names.items()))))
for line in open("/proc/%s/status" % pid):
    if line.startswith(("VmRSS", "RssAnon", "RssFile")):
        print(" ".join(line.split()))
