#!/usr/bin/python3
"""Writes cmake/startup-order.ld from a callgrind profile of a gateway starting and idling.

    scripts/startup_order.py LINK_MAP BINARY CALLGRIND_OUT... > cmake/startup-order.ld

Run by scripts/startup-order, which makes the three inputs. The result is a GNU ld script that
lays out first in .text every input section holding a function the profile saw executed in the
binary. Why (bench/README.md, "Idle memory"):
the kernel maps up to 64 KB of page cache around every page fault in a file (fault-around), so a
start that touches 86 kB of functions scattered over 900 kB of text ends with nearly all of it
resident; gathered, it touches a few 64 KB windows.

Granularity is the input section: one function for the objects compiled with
-ffunction-sections (the gateway's own, libcurl from scripts/build-libcurl), the whole object
for Debian's static archives (libevent, jansson, protobuf-c, ...), which are not.
"""

import bisect
import re
import subprocess
import sys


# The input section patterns of the .text statement in ld's default script (`ld --verbose`),
# binutils 2.40.
DEFAULT_TEXT = (
    "*(.text.unlikely .text.*_unlikely .text.unlikely.*)",
    "*(.text.exit .text.exit.*)",
    "*(.text.startup .text.startup.*)",
    "*(.text.hot .text.hot.*)",
    "*(SORT(.text.sorted.*))",
    "*(.text .stub .text.* .gnu.linkonce.t.*)",
    "*(.gnu.warning)",
)


def executed_functions(callgrind_out, binary_name):
    """Names of the functions in `binary_name` with a self cost in the profile."""
    names = {"ob": {}, "fn": {}}
    current = {"ob": None, "fn": None}
    executed = set()
    after_calls = False

    def resolve(kind, text):
        # callgrind compresses names: "(12) name" defines id 12, a later "(12)" refers to it.
        m = re.match(r"\((\d+)\)(?: (.*))?$", text)
        if not m:
            return text
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind][m.group(1)]

    with open(callgrind_out) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith(("ob=", "fn=")):
                current[line[:2]] = resolve(line[:2], line[3:])
            elif line.startswith("cob="):
                resolve("ob", line[4:])
            elif line.startswith("cfn="):
                resolve("fn", line[4:])
            elif line.startswith("calls="):
                after_calls = True  # the next cost line is the callee's, not this function's
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_calls:
                    after_calls = False
                elif (current["ob"] or "").endswith("/" + binary_name):
                    # "name'2" is callgrind's name for a recursion level of name.
                    executed.add(re.sub(r"'\d+$", "", current["fn"]))
    return executed


def text_input_sections(link_map):
    """[start, size, section, file] for each input section in the output section .text."""
    sections = []
    in_text = False
    pending = None
    with open(link_map) as f:
        for line in f:
            line = line.rstrip("\n")
            if re.match(r"^\.\S", line):  # an output section starts
                in_text = re.match(r"^\.text(\s|$)", line) is not None
                continue
            if not in_text:
                continue
            # " .text.name  0xADDR  0xSIZE file", or the name alone when it is long and the
            # address, size and file follow on the next line.
            m = re.match(r"^ (\.text\S*)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)", line)
            if m:
                sections.append([int(m.group(2), 16), int(m.group(3), 16), m.group(1), m.group(4)])
                pending = None
                continue
            m = re.match(r"^ (\.text\S*)$", line)
            if m:
                pending = m.group(1)
                continue
            m = re.match(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)$", line)
            if pending and m:
                sections.append([int(m.group(1), 16), int(m.group(2), 16), pending, m.group(3)])
            pending = None
    return sorted(s for s in sections if s[1] > 0)


def file_pattern(path):
    """An ld file pattern for a map's file name: 'archive.a:member' or '*object.o'."""
    m = re.match(r"(?:.*/)?([^/]+\.a)\(([^)]+)\)$", path)
    if m:
        return "*%s:%s" % (m.group(1), m.group(2))
    return "*" + path.rsplit("/", 1)[-1]


def main():
    link_map, binary = sys.argv[1:3]
    executed = set()
    for callgrind_out in sys.argv[3:]:
        executed |= executed_functions(callgrind_out, binary.rsplit("/", 1)[-1])
    sections = text_input_sections(link_map)
    starts = [s[0] for s in sections]
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True,
                        check=True).stdout
    hot = set()
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT" and parts[2] in executed:
            i = bisect.bisect_right(starts, int(parts[0], 16)) - 1
            if i >= 0 and sections[i][0] <= int(parts[0], 16) < sections[i][0] + sections[i][1]:
                hot.add(i)
    total = sum(s[1] for s in sections)
    hot_size = sum(sections[i][1] for i in hot)
    print("/* Generated by scripts/startup-order: do not edit; run it again after changes to what")
    print("   the gateway does at start (bench/README.md, \"Idle memory\"). The input sections")
    print("   holding the %d functions a starting and idling gateway ran, %d of %d kB of text,"
          % (len(executed), hot_size // 1024, total // 1024))
    print("   first in .text: they cost a few of the kernel's 64 KB fault-around windows instead")
    print("   of touching nearly every one. An entry that matches nothing any more is ignored by")
    print("   ld; tests/integration/test_idle_footprint.py notices when the layout decays.")
    print("")
    print("   This .text statement comes before ld's default one (INSERT AFTER .plt.sec, which")
    print("   precedes .text in ld's x86-64 scripts), so it takes every input section and the")
    print("   default one stays empty and is dropped: one .text, as valgrind's symbol reader")
    print("   needs. After the list come the default statement's own patterns, in its order. */")
    print("SECTIONS\n{\n  .text :\n  {")
    for i in sorted(hot):
        print("    %s(%s)" % (file_pattern(sections[i][3]), sections[i][2]))
    for patterns in DEFAULT_TEXT:
        print("    " + patterns)
    print("  }\n}\nINSERT AFTER .plt.sec;")
    print("startup-order: %d functions executed, %d input sections, %d of %d kB of text"
          % (len(executed), len(hot), hot_size // 1024, total // 1024), file=sys.stderr)


if __name__ == "__main__":
    main()
