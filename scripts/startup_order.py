#!/usr/bin/python3
"""Writes cmake/startup-order.ld from a callgrind profile of a gateway starting and idling.

    scripts/startup_order.py LINK_MAP BINARY --start CALLGRIND_OUT... --serve CALLGRIND_OUT...

Run by scripts/startup-order, which makes the inputs: profiles of gateways starting and idling
(--start), and of the same gateways serving a little afterwards (--serve). The result is a GNU
ld script that lays out first in .text every input section holding a function the start
profiles saw executed in the binary, then those only the serving ones did. Why (bench/README.md, "Idle memory"):
the kernel maps up to 64 KB of page cache around every page fault in a file (fault-around), so a
start that touches 86 kB of functions scattered over 900 kB of text ends with nearly all of it
resident; gathered, it touches a few 64 KB windows. The serving code follows, so that a replica
that has served and gone idle again holds a few windows more, not the rest of the binary.

Granularity is the input section: one function for the objects compiled with
-ffunction-sections (the gateway's own, libcurl from scripts/build-libcurl), the whole object
for Debian's static archives (libevent, jansson, protobuf-c, ...), which are not.
"""

import argparse
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


def entry_point(binary):
    """The ELF entry point (_start): the kernel's first instruction, which valgrind counts as
    "(below main)" with glibc's start code, so no profile names it."""
    header = subprocess.run(["readelf", "-h", binary], capture_output=True, text=True,
                            check=True).stdout
    return int(re.search(r"Entry point address:\s+0x([0-9a-f]+)", header).group(1), 16)


def function_addresses(binary):
    """[(address, name)] of the binary's functions (nm)."""
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True,
                        check=True).stdout
    parts = (line.split() for line in nm.splitlines())
    return [(int(p[0], 16), p[2]) for p in parts if len(p) == 3 and p[1] in "tT"]


def sections_holding(functions, sections, symbols, addresses=()):
    """Indexes into `sections` of those holding one of `symbols` (function_addresses) named in
    `functions`, or one of `addresses`, or an address callgrind gave as the name of code
    without a symbol."""
    starts = [s[0] for s in sections]
    wanted = list(addresses)
    wanted += [int(f, 16) for f in functions if re.match(r"0x[0-9a-f]+$", f)]
    wanted += [address for address, name in symbols if name in functions]
    found = set()
    for address in wanted:
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and sections[i][0] <= address < sections[i][0] + sections[i][1]:
            found.add(i)
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("link_map")
    ap.add_argument("binary")
    ap.add_argument("--start", nargs="+", required=True, help="profiles of start + idle")
    ap.add_argument("--serve", nargs="*", default=[], help="profiles of serving afterwards")
    args = ap.parse_args()
    name = args.binary.rsplit("/", 1)[-1]
    sections = text_input_sections(args.link_map)
    symbols = function_addresses(args.binary)
    phases = []  # [(name, functions executed, input section indexes)], in layout order
    taken = set()
    for phase, profiles in (("start", args.start), ("serve", args.serve)):
        executed = set()
        for callgrind_out in profiles:
            executed |= executed_functions(callgrind_out, name)
        entry = [entry_point(args.binary)] if phase == "start" else []
        indexes = sections_holding(executed, sections, symbols, entry) - taken
        taken |= indexes
        phases.append((phase, executed, indexes))
    total = sum(s[1] for s in sections)

    def size(indexes):
        return sum(sections[i][1] for i in indexes) // 1024
    print("/* Generated by scripts/startup-order: do not edit; run it again after changes to what")
    print("   the gateway does at start or when serving (bench/README.md, \"Idle memory\"). First in")
    print("   .text, the input sections holding the %d functions a starting and idling gateway"
          % len(phases[0][1]))
    print("   ran (%d kB), then those holding the %d more it ran serving (%d kB), of %d kB of text:"
          % (size(phases[0][2]), len(phases[1][1] - phases[0][1]), size(phases[1][2]),
             total // 1024))
    print("   they cost a few of the kernel's 64 KB fault-around windows instead of touching")
    print("   nearly every one. An entry that matches nothing any more is ignored by ld;")
    print("   tests/integration/test_idle_footprint.py notices when the layout decays.")
    print("")
    print("   This .text statement comes before ld's default one (INSERT AFTER .plt.sec, which")
    print("   precedes .text in ld's x86-64 scripts), so it takes every input section and the")
    print("   default one stays empty and is dropped: one .text, as valgrind's symbol reader")
    print("   needs. After the list come the default statement's own patterns, in its order. */")
    print("SECTIONS\n{\n  .text :\n  {")
    for phase, _executed, indexes in phases:
        print("    /* %s */" % phase)
        for i in sorted(indexes):
            print("    %s(%s)" % (file_pattern(sections[i][3]), sections[i][2]))
    for patterns in DEFAULT_TEXT:
        print("    " + patterns)
    print("  }\n}\nINSERT AFTER .plt.sec;")
    for phase, executed, indexes in phases:
        print("startup-order: %s: %d functions executed, %d more input sections, %d kB"
              % (phase, len(executed), len(indexes), size(indexes)), file=sys.stderr)
    print("startup-order: of %d kB of text" % (total // 1024), file=sys.stderr)


if __name__ == "__main__":
    main()
