#!/usr/bin/env bash
# Installs and starts what the integration tests need: PostgreSQL, PgBouncer, Redis and Chromium from Debian's
# packages, and the toolchain that builds the SQLite driver. Idempotent; safe to run on a developer machine as root. Source it to get the TEST_* variables;
# the strict options it runs under are put back as they were at its end, so an interactive shell keeps its own.
caller_shell_options="$(set +o)"
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v pg_ctlcluster > /dev/null || missing+=(postgresql)
command -v pgbouncer > /dev/null || missing+=(pgbouncer)
command -v redis-server > /dev/null || missing+=(redis-server)
command -v chromium > /dev/null || missing+=(chromium)
# better-sqlite3 builds from source when its prebuilt binary cannot be downloaded (no access to GitHub).
command -v g++ > /dev/null || missing+=(g++)
command -v make > /dev/null || missing+=(make)
command -v python3 > /dev/null || missing+=(python3)
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

pg_version="$(ls /etc/postgresql | sort -V | tail -1)"
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  pg_ctlcluster "$pg_version" main start
fi
until pg_isready -q -h 127.0.0.1; do sleep 0.2; done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname = 'gateway'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE gateway LOGIN SUPERUSER PASSWORD 'gateway'\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname = 'gateway'\"" | grep -q 1 ||
  su postgres -c "psql -qc 'CREATE DATABASE gateway OWNER gateway'"

# PgBouncer in front of that PostgreSQL, one instance per pool mode, on ports of their own (the package's own
# service, where systemd starts it, keeps 6432). Any database name is passed through, so a suite can make its own.
for mode_port in session:6433 transaction:6434; do
  mode="${mode_port%%:*}" port="${mode_port##*:}"
  dir="/tmp/cgw-pgbouncer-$mode"
  if ! pg_isready -q -h 127.0.0.1 -p "$port" -U gateway -d gateway; then
    mkdir -p "$dir"
    printf '"gateway" "gateway"\n' > "$dir/userlist.txt"
    cat > "$dir/pgbouncer.ini" << INI
[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = $mode
max_client_conn = 200
default_pool_size = $([[ $mode == session ]] && echo 20 || echo 4)
pidfile = $dir/pgbouncer.pid
logfile = $dir/pgbouncer.log
INI
    chown -R postgres "$dir"
    su postgres -s /bin/sh -c "pgbouncer -d -q $dir/pgbouncer.ini"
    until pg_isready -q -h 127.0.0.1 -p "$port" -U gateway -d gateway; do sleep 0.1; done
  fi
done

if ! redis-cli -h 127.0.0.1 ping > /dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no > /dev/null
  until redis-cli -h 127.0.0.1 ping > /dev/null 2>&1; do sleep 0.1; done
fi

export TEST_DATABASE_URL="postgres://gateway:gateway@127.0.0.1:5432/gateway"
export TEST_PGBOUNCER_SESSION_URL="postgres://gateway:gateway@127.0.0.1:6433/gateway"
export TEST_PGBOUNCER_TRANSACTION_URL="postgres://gateway:gateway@127.0.0.1:6434/gateway"
export TEST_REDIS_URL="redis://127.0.0.1:6379"
export CHROMIUM_PATH="$(command -v chromium)"
eval "$caller_shell_options"
unset caller_shell_options
