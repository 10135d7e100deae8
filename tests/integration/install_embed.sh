#!/usr/bin/env bash
# make install and libconfide for embedders: `cmake --install` (what `make install PREFIX=P
# DESTDIR=D` runs) stages bin/confide, libconfide.a, libconfide.so.X.Y.Z with its soname link,
# the public headers, a relocatable pkg-config file and the examples; the shared library
# exports the public API only; examples/embed, built from the installed tree with pkg-config
# (shared, then with libconfide.a linked in), runs a small pipeline and verifies its audit log.
# cc, make, pkg-config or readelf missing: skipped (exit 77), or a failure under CI=true.
set -euo pipefail
CONFIDE=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source "$SRC/tests/integration/lib.bash"
for tool in cc make pkg-config readelf nm cmake; do
    if ! command -v $tool >/dev/null; then
        [ "${CI:-}" = true ] && fail "$tool is not installed (scripts/setup.sh)"
        echo "skip: $tool not installed"
        exit 77
    fi
done
BUILD=$(cd "$(dirname "$CONFIDE")" && pwd)
[ -f "$BUILD/cmake_install.cmake" ] || fail "no cmake_install.cmake in $BUILD"

# The Makefile target runs exactly this, with DESTDIR passed through.
make -s -n -C "$SRC" install BUILD="$BUILD" PREFIX=/opt/x DESTDIR=/stage/y >"$tmp/make-n" ||
    fail "make -n install"
grep -q "DESTDIR=\"/stage/y\" cmake --install $BUILD --prefix \"/opt/x\"" "$tmp/make-n" ||
    fail "make install does not run cmake --install with PREFIX and DESTDIR: $(cat "$tmp/make-n")"

DESTDIR="$tmp/stage" cmake --install "$BUILD" --prefix /opt/confide >"$tmp/install.log" ||
    fail "cmake --install: $(cat "$tmp/install.log")"
P=$tmp/stage/opt/confide
LIB=$(dirname "$(find "$P" -name libconfide.a | head -1)")
[ -d "$LIB" ] || fail "libconfide.a not installed"
for f in "$P/bin/confide" "$LIB/libconfide.so" "$LIB/pkgconfig/confide.pc" \
    "$P/include/confide/runtime.h" "$P/include/confide/audit.h" "$P/include/confide/metrics.h" \
    "$P/share/doc/confide/examples/embed/embed.c" \
    "$P/share/doc/confide/examples/prometheus/alerts.yml" \
    "$P/share/doc/confide/examples/grafana/confide.json"; do
    [ -e "$f" ] || fail "not installed: ${f#$tmp/stage}"
done
# Nothing outside the prefix.
[ "$(ls "$tmp/stage")" = opt ] || fail "installed outside the prefix: $(ls "$tmp/stage")"
[ "$(ls "$tmp/stage/opt")" = confide ] || fail "installed outside the prefix"
# Versioned shared library: libconfide.so -> libconfide.so.MAJOR -> libconfide.so.X.Y.Z
version=$(sed -n 's/^project(confide VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
major=${version%%.*}
[ -f "$LIB/libconfide.so.$version" ] || fail "no libconfide.so.$version"
[ "$(readlink "$LIB/libconfide.so")" = "libconfide.so.$major" ] || fail "libconfide.so link"
[ "$(readlink "$LIB/libconfide.so.$major")" = "libconfide.so.$version" ] || fail "soname link"
# (into files, not piped into grep -q: grep exiting first gives the writer SIGPIPE, which pipefail
# reports as a failure now and then)
readelf -d "$LIB/libconfide.so.$version" >"$tmp/dynamic"
grep -q "Library soname: \[libconfide.so.$major\]" "$tmp/dynamic" ||
    fail "soname is not libconfide.so.$major"
# Exports: the public API, not the modules' internals.
nm -D --defined-only "$LIB/libconfide.so.$version" | awk '{print $3}' | sed 's/@.*//' \
    >"$tmp/exports"
grep -qx cf_pipeline_create "$tmp/exports" || fail "cf_pipeline_create not exported"
grep -qx cf_audit_verify "$tmp/exports" || fail "cf_audit_verify not exported"
if grep -v '^cf__assert_fail$' "$tmp/exports" | grep '^cf__' >"$tmp/bad"; then
    fail "internal symbols exported: $(grep '^cf__' "$tmp/exports" | head -3)"
fi
if grep -v '^cf_' "$tmp/exports" | grep -v '^CONFIDE_[0-9]*$' | grep -v '^_' >"$tmp/bad"; then
    fail "non-confide symbols exported: $(grep -v '^cf_' "$tmp/exports" | head -3)"
fi
export PKG_CONFIG_PATH=$LIB/pkgconfig
[ "$(pkg-config --modversion confide)" = "$version" ] || fail "pkg-config --modversion"
pkg-config --cflags confide >"$tmp/cflags"
grep -q -- "-I$P/lib/pkgconfig/../../include\|-I$P/include" "$tmp/cflags" ||
    fail "pkg-config --cflags: $(pkg-config --cflags confide)"

# A sanitized build's library needs the same runtime in the program.
SAN=""
nm -D --undefined-only "$LIB/libconfide.so.$version" >"$tmp/undefined"
if grep -q "__asan_" "$tmp/undefined"; then
    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer"
fi
cp -r "$P/share/doc/confide/examples/embed" "$tmp/embed"
make -s -C "$tmp/embed" CFLAGS="-O1 -g -Wall -Wextra -Werror $SAN" LDFLAGS="$SAN" \
    >"$tmp/make.log" 2>&1 || fail "building the example: $(cat "$tmp/make.log")"
LD_LIBRARY_PATH=$LIB ldd "$tmp/embed/embed" >"$tmp/ldd"
grep -q "libconfide.so.$major => $LIB/" "$tmp/ldd" ||
    fail "the example does not load the installed libconfide.so.$major"
(cd "$tmp/embed" && LD_LIBRARY_PATH=$LIB ./embed "$tmp/run1" >"$tmp/embed.out") ||
    fail "the example failed: $(cat "$tmp/embed.out")"
grep -q '^{"verified":true,"events":24,"leaves":24,' "$tmp/embed.out" ||
    fail "example output: $(cat "$tmp/embed.out")"
expect 0 "$CONFIDE" audit verify "$tmp/run1/audit" --keys "$tmp/run1/keys"

make -s -C "$tmp/embed" clean
make -s -C "$tmp/embed" STATIC=1 CFLAGS="-O1 -g -Wall -Wextra -Werror $SAN" LDFLAGS="$SAN" \
    >"$tmp/make.log" 2>&1 || fail "building the example statically: $(cat "$tmp/make.log")"
ldd "$tmp/embed/embed" >"$tmp/ldd"
if grep -q libconfide "$tmp/ldd"; then
    fail "STATIC=1 still loads libconfide.so"
fi
(cd "$tmp/embed" && ./embed "$tmp/run2" >"$tmp/embed.out") ||
    fail "the static example failed: $(cat "$tmp/embed.out")"
grep -q '"verified":true' "$tmp/embed.out" || fail "static example: $(cat "$tmp/embed.out")"
echo "ok: install_embed (libconfide.so.$version, soname .$major, example shared and static)"
