#!/usr/bin/env bash
# Make sure the system programs named as arguments are installed. Installs the packages
# that provide them with apt-get when they are missing and we may; otherwise says
# exactly what to install. Programs that only matter on Linux (systemd-analyze, for
# checking the rendered unit files) are skipped elsewhere; their tests skip too.
set -euo pipefail

# The package that provides a program, where its name differs from the program's.
package_for() {
    case "$1" in
        systemd-analyze) echo systemd ;;
        *) echo "$1" ;;
    esac
}

linux_only() {
    case "$1" in
        systemd-analyze) return 0 ;;
        *) return 1 ;;
    esac
}

os="$(uname -s)"
missing=()
for program in "$@"; do
    if [ "$os" != "Linux" ] && linux_only "$program"; then
        continue
    fi
    command -v "$program" >/dev/null 2>&1 || missing+=("$program")
done
[ ${#missing[@]} -eq 0 ] && exit 0

packages=()
for program in "${missing[@]}"; do
    packages+=("$(package_for "$program")")
done

if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="none"; fi
    if [ "$sudo" != "none" ]; then
        echo "installing ${packages[*]} with apt-get" >&2
        $sudo apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
        exit 0
    fi
fi
echo "spkd needs these programs, which are not installed: ${missing[*]}" >&2
case "$os" in
    Darwin) echo "install them with: brew install ${packages[*]}" >&2 ;;
    *) echo "install them with your package manager, e.g.: sudo apt-get install ${packages[*]}" >&2 ;;
esac
exit 1
