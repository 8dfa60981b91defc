#!/usr/bin/env bash
# Installs, from Debian's packages, the servers and browser the test suite starts for real:
# PostgreSQL, Redis, Chromium and ChromeDriver, Slurm with munge (and MariaDB for slurmdbd),
# OpenSSH. Only what is missing is installed.
set -euo pipefail

missing=()
have_pg() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
have_pg || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v runuser >/dev/null || missing+=(util-linux)
# Slurm (a single-node test cluster, see scripts/slurm-test-cluster.sh) with munge, its
# accounting database for the slurmdbd mode, and OpenSSH for the Slurm-over-SSH tests.
command -v slurmctld >/dev/null || missing+=(slurmctld)
command -v slurmd >/dev/null || missing+=(slurmd)
command -v sbatch >/dev/null || missing+=(slurm-client)
command -v munged >/dev/null || missing+=(munge)
command -v slurmdbd >/dev/null || missing+=(slurmdbd)
command -v mariadbd >/dev/null || missing+=(mariadb-server)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)

if [ ${#missing[@]} -eq 0 ]; then
  echo "test servers present: postgresql, redis, chromium, chromedriver, slurm, munge, mariadb, sshd"
  exit 0
fi
echo "installing from Debian's packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Keep the packages from starting system-wide daemons: the tests start private ones.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  added_policy=1
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ -n "$added_policy" ] && $SUDO rm -f "$policy"
# The package starts a cluster of its own; the tests start private ones, so stop it.
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
  $SUDO service postgresql stop >/dev/null 2>&1 || true
fi
if [[ " ${missing[*]} " == *" redis-server "* ]]; then
  $SUDO service redis-server stop >/dev/null 2>&1 || true
fi
