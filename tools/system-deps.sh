#!/bin/sh
# Installs the Debian packages the tests and benchmarks use, when run as root on Debian and they
# are missing. Elsewhere it says what is missing; tests that need them skip with that reason.
set -u
want="tshark:tshark tcpdump:tcpdump ip:iproute2 chromium:chromium chromedriver:chromium-driver argus:argus-server iperf3:iperf3 systemd-analyze:systemd setpriv:util-linux"
missing=""
for pair in $want; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/sbin/$cmd" ] || missing="$missing $pkg"
done
# PostgreSQL's server binaries live in a versioned folder, not on PATH
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing:$missing"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null
  export DEBIAN_FRONTEND=noninteractive
  (apt-get install -y -qq $missing >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $missing >/dev/null 2>&1; }) \
    || echo "could not install:$missing (the tests that need them will skip)"
else
  echo "missing:$missing (not root on Debian: the tests that need them will skip)"
fi
exit 0
