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
  names of their own).
"""

import os
import time

import pgw_harness as h


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
