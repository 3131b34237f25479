#!/usr/bin/env bash
# awe in one command, on a machine with Python >= 3.11 and git:
#   bash run.sh demo    set up, then run the course reduction on a simulated WFI night
#                       (embedded SQLite database and local storage under ./awe-home,
#                       products and the log awe.log in ./awe-work)
#   bash run.sh prompt  the awe> prompt on the demo's data (in ./awe-work)
#   bash run.sh test    set up (incl. a PostgreSQL server binary), check the code (ruff, mypy:
#                       pyproject.toml's [tool.ruff], [tool.mypy]), then run every test
#   bash run.sh bench   set up, then run the benchmarks (full-size chips: minutes, GBs)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

setup_python() {
    if [ ! -x .venv/bin/python ]; then
        "$PYTHON" -m venv .venv
    fi
    if [ ! -f .venv/.awe-installed ] || [ pyproject.toml -nt .venv/.awe-installed ] \
            || [ constraints.txt -nt .venv/.awe-installed ]; then
        .venv/bin/python -m pip install -q --upgrade pip
        # constraints.txt pins a known-good set: without it pip backtracks for many minutes
        # through s3fs/aiobotocore/botocore releases
        .venv/bin/python -m pip install -q -c constraints.txt -e ".[test,bench]"
        touch .venv/.awe-installed
    fi
}

static_checks() {
    # lint (awe, tests, benchmarks) and type checks (awe/db, awe/model, awe/tasks) as pyproject.toml configures them
    echo "== ruff check"
    if ! .venv/bin/ruff check; then
        echo "run.sh test: ruff found the problems above; fix them (.venv/bin/ruff check shows them again)" >&2
        exit 1
    fi
    echo "== mypy"
    if ! .venv/bin/mypy; then
        echo "run.sh test: mypy found the type errors above; fix them (.venv/bin/mypy shows them again)" >&2
        exit 1
    fi
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

setup_postgres() {
    # the database tests run on SQLite and on a throw-away PostgreSQL server they start themselves
    if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        return
    fi
    echo "installing PostgreSQL (server binaries for the database tests)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
}

setup_chromium() {
    # the browser tests (tests/web/test_browser.py) drive Debian's chromium through Playwright's executable_path
    if [ -x /usr/bin/chromium ]; then
        return
    fi
    echo "installing chromium (the web application's browser tests)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
}

case "${1:-}" in
    demo)
        setup_python
        shift
        export AWE_HOME=${AWE_HOME:-$PWD/awe-home}
        mkdir -p awe-work
        cd awe-work
        exec ../.venv/bin/awe demo --prompt-command "bash run.sh prompt" "$@"
        ;;
    prompt)
        setup_python
        shift
        export AWE_HOME=${AWE_HOME:-$PWD/awe-home}
        mkdir -p awe-work
        cd awe-work
        exec ../.venv/bin/awe "$@"
        ;;
    test)
        setup_python
        setup_postgres
        setup_chromium
        shift
        static_checks
        echo "== pytest"
        # two worker processes (pytest-xdist), each test file on one of them: the suite takes about 2/3 of
        # its serial time on 2 cores; AWE_TEST_WORKERS=0 runs it in this one process
        exec .venv/bin/python -m pytest -n "${AWE_TEST_WORKERS:-2}" --dist loadfile "$@"
        ;;
    bench)
        setup_python
        shift
        for bench in benchmarks/bench_*.py; do
            echo "== $bench"
            .venv/bin/python "$bench" "$@"
        done
        ;;
    *)
        echo "usage: bash run.sh demo|prompt|test|bench" >&2
        exit 2
        ;;
esac
