"""What an idle gateway holds in memory stays small (issue 12: idle RSS).

RSS itself is no test here: CI builds with AddressSanitizer, whose shadow memory and
quarantine make RSS meaningless, and a Release figure depends on the page cache and the
kernel's fault-around. The figures are in bench/README.md ("Idle memory"). These tests pin
the structural causes instead, on the running process, so they hold in any build:

- no library is loaded that costs idle memory for nothing: libxml2 pulled ICU (libicuuc,
  libicudata) and liblzma, ~1.4 MB of RSS at idle, for one small STS answer (expat parses it);
  Debian's shared libcurl4 pulled 25 libraries the gateway never calls (LDAP, Kerberos, SASL,
  RTMP with GnuTLS, libssh2, ...), 4.3 MB: libcurl is linked statically from Debian's source
  with HTTP(S) over OpenSSL and nghttp2 only (scripts/build-libcurl);
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


def test_no_xml_or_icu_library_is_loaded(gateway, fake_aws):
    gw = gateway()
    libs = _mapped_libraries(gw.pid)
    assert any(lib.startswith("libexpat.so") for lib in libs), sorted(libs)
    unwanted = sorted(lib for lib in libs
                      if lib.startswith(("libxml2.so", "libicu", "liblzma.so")))
    assert unwanted == [], unwanted


# What Debian's libcurl4 would bring (its own .so and its dependencies), and libevent's
# all-in-one library, which maps libevent_core's code a second time.
UNWANTED_WITH_LIBCURL4 = ("libcurl.so", "libgnutls.so", "libnettle.so", "libhogweed.so",
                          "libgmp.so", "libp11-kit.so", "libtasn1.so", "librtmp.so",
                          "libssh2.so", "libldap-", "liblber-", "libsasl2.so",
                          "libgssapi_krb5.so", "libkrb5.so", "libk5crypto.so", "libidn2.so",
                          "libpsl.so", "libzstd.so", "libbrotli", "libunistring.so",
                          "libevent-2.1.so")


def test_only_the_http_parts_of_libcurl_are_loaded(gateway, fake_aws):
    gw = gateway()
    libs = _mapped_libraries(gw.pid)
    # the libraries the static libcurl does use
    for wanted in ("libnghttp2.so", "libssl.so", "libcrypto.so", "libevent_core-", "libevent_extra-"):
        assert any(lib.startswith(wanted) for lib in libs), (wanted, sorted(libs))
    unwanted = sorted(lib for lib in libs if lib.startswith(UNWANTED_WITH_LIBCURL4))
    assert unwanted == [], unwanted


def test_own_threads_at_idle(gateway, fake_aws):
    for grpc_threads in (1, 3):
        gw = gateway(["--grpc-threads", str(grpc_threads)])
        time.sleep(1.0)  # settled: startup work done, nothing in flight
        own = [n for n in _thread_names(gw.pid) if n.startswith("personalize-gat")]
        # main + the event loop + the completion-queue threads
        assert len(own) == grpc_threads + 2, _thread_names(gw.pid)
        gw.stop()
