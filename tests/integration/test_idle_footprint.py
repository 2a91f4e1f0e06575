"""What an idle gateway holds in memory stays small (issue 12: idle RSS).

RSS itself is no test here: CI builds with AddressSanitizer, whose shadow memory and
quarantine make RSS meaningless, and a Release figure depends on the page cache and the
kernel's fault-around. The figures are in bench/README.md ("Idle memory"). These tests pin
the structural causes instead, on the running process, so they hold in any build:

- only the shared libraries gRPC core brings are mapped, with OpenSSL and zlib: libxml2 pulled
  ICU (libicuuc, libicudata) and liblzma, ~1.4 MB of RSS at idle, for one small STS answer
  (expat parses it); Debian's shared libcurl4 pulled 25 libraries the gateway never calls
  (LDAP, Kerberos, SASL, RTMP with GnuTLS, libssh2, ...), 4.3 MB: libcurl is linked statically
  from Debian's source with HTTP(S) over OpenSSL and nghttp2 only (scripts/build-libcurl); the
  small C libraries (libevent, jansson, hiredis, expat, protobuf-c, nghttp2) are linked from
  Debian's static archives, 0.4 MB less than six more libraries mapped;
- the gateway's own threads at idle are main, the event loop and the completion-queue
  threads: a pool or a per-connection thread of ours would show here (gRPC core's threads have
  names of their own);
- the code a starting, idling gateway runs is laid out first in .text (cmake/startup-order.ld):
  the kernel maps 64 KB of page cache around every page fault in the binary, so that code
  scattered over the binary's 900 kB of text left nearly all of it resident, 0.5 MB more.
"""

import os
import re
import sys
import time

import pgw_harness as h

sys.path.insert(0, os.path.join(h.REPO, "scripts"))
import startup_order  # noqa: E402  (scripts/startup_order.py: the link map reader)


def _mapped_libraries(pid):
    libs = set()
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                libs.add(os.path.basename(parts[5].strip()))
    return libs


def _thread_names(pid):
    names = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            names.append(f.read().strip())
    return names


# Every shared library the gateway may map: glibc, gRPC core and what it links, OpenSSL and
# zlib (gRPC core links them too). libcurl (scripts/build-libcurl) and the small C libraries
# (libevent, jansson, hiredis, expat, protobuf-c, nghttp2: PGW_STATIC_DEPS) are inside the
# binary. So neither Debian's libcurl4 and its 25 libraries nor libxml2 with ICU can come back,
# nor any new shared library unnoticed: each costs idle RSS (bench/README.md, "Idle memory").
# A build configured with -DPGW_SYSTEM_CURL=ON or -DPGW_STATIC_DEPS=OFF fails this on purpose.
ALLOWED_SHARED = ("ld-linux-x86-64.so", "libc.so", "libm.so", "libgcc_s.so", "libstdc++.so",
                  "libgrpc.so", "libgpr.so", "libupb.so", "libre2.so", "libcares.so",
                  "libaddress_sorting.so", "libabsl_", "libssl.so", "libcrypto.so", "libz.so")
# What the sanitizer builds add.
SANITIZER_RUNTIMES = ("libasan.so", "libubsan.so", "libclang_rt.")


def test_only_grpc_core_openssl_and_zlib_are_shared(gateway, fake_aws):
    gw = gateway()
    libs = _mapped_libraries(gw.pid)
    for wanted in ("libgrpc.so", "libssl.so", "libcrypto.so"):
        assert any(lib.startswith(wanted) for lib in libs), (wanted, sorted(libs))
    unexpected = sorted(lib for lib in libs
                        if not lib.startswith(ALLOWED_SHARED + SANITIZER_RUNTIMES)
                        and lib != "personalize-gateway")
    assert unexpected == [], unexpected


def test_own_threads_at_idle(gateway, fake_aws):
    for grpc_threads in (1, 3):
        gw = gateway(["--grpc-threads", str(grpc_threads)])
        time.sleep(1.0)  # settled: startup work done, nothing in flight
        own = [n for n in _thread_names(gw.pid) if n.startswith("personalize-gat")]
        # main + the event loop + the completion-queue threads
        assert len(own) == grpc_threads + 2, _thread_names(gw.pid)
        gw.stop()


# GCC's names for the pieces of a function it split or specialised (-O2 and up): a build with
# less optimisation (the suite's Debug build) has the whole function instead.
_CLONE = re.compile(r"\.(part|isra|constprop|cold|lto_priv)\.?\d*")


def test_startup_code_is_laid_out_first(gateway_binary):
    """ld followed cmake/startup-order.ld, and the list still names the code the gateway has."""
    link_map = gateway_binary + ".map"
    assert os.path.exists(link_map), "CMakeLists.txt writes %s next to the binary" % link_map
    with open(os.path.join(h.REPO, "cmake", "startup-order.ld")) as f:
        entries = re.findall(r"^    (\*\S+?)\((\.text[^) ]*)\)$", f.read(), re.M)
    # The list, then the default patterns ("*(.text.unlikely ...)"): only the list's entries.
    entries = [(pattern, section) for pattern, section in entries if pattern != "*"]
    assert len(entries) > 50, "cmake/startup-order.ld lists %d input sections" % len(entries)
    sections = startup_order.text_input_sections(link_map)
    position = {}
    for i, (_start, _size, section, path) in enumerate(sections):
        position.setdefault((startup_order.file_pattern(path), section), i)
    wanted = [e for e in entries if not _CLONE.search(e[1])]
    found = [position[e] for e in wanted if e in position]
    # Renamed, moved or removed functions match nothing: the layout decays until
    # scripts/startup-order is run again.
    assert len(found) >= 0.9 * len(wanted), (
        "only %d of the %d input sections cmake/startup-order.ld names are in the binary: "
        "run scripts/startup-order" % (len(found), len(wanted)),
        sorted(set(wanted) - set(position))[:20])
    # ld placed them first, in the list's order, before everything the list does not name.
    listed = set(e for e in entries if e in position)
    first_other = min(i for i, (_a, _s, section, path) in enumerate(sections)
                      if (startup_order.file_pattern(path), section) not in listed)
    assert max(found) < first_other, (
        "input sections named in cmake/startup-order.ld lie after others in .text: was the "
        "gateway linked without -T cmake/startup-order.ld?")
