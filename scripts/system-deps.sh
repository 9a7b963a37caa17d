#!/usr/bin/env bash
# Make sure the system programs named as arguments are installed. Installs the packages
# that provide them with apt-get when they are missing and we may; otherwise says
# exactly what to install. Programs that only matter on Linux (systemd-analyze, for
# checking the rendered unit files) are skipped elsewhere; their tests skip too.
# Optional programs (pg_ctl: the PostgreSQL server for the multi-host tests; chromium:
# the headless browser of the html page test; chromedriver: how the dashboard's tests
# drive it; soffice and pdftotext: LibreOffice
# converting the docx output to PDF, and reading its text back) are installed where we
# may; where we may not, their tests skip and this says so.
set -euo pipefail

# The packages that provide a program (space-separated), where they differ from its name.
package_for() {
    case "$1" in
        systemd-analyze) echo systemd ;;
        pg_ctl) if [ "$(uname -s)" = Darwin ]; then echo postgresql@16; else echo postgresql; fi ;;
        chromium) echo chromium ;;  # Debian's package; the program has the same name
        chromedriver) echo chromium-driver ;;  # the same version as Debian's chromium
        # Writer without the GUI, and a CJK font: without one the Chinese text of the
        # docx test would have no glyphs in the PDF.
        soffice) echo libreoffice-writer-nogui fonts-wqy-zenhei ;;
        pdftotext) if [ "$(uname -s)" = Darwin ]; then echo poppler; else echo poppler-utils; fi ;;
        *) echo "$1" ;;
    esac
}

optional() {
    case "$1" in
        pg_ctl|chromium|chromedriver|soffice|pdftotext) return 0 ;;
        *) return 1 ;;
    esac
}

# Whether a program is installed. Debian keeps the PostgreSQL server programs off PATH,
# under /usr/lib/postgresql/<version>/bin.
installed() {
    command -v "$1" >/dev/null 2>&1 && return 0
    case "$1" in
        pg_ctl) compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null ;;
        *) return 1 ;;
    esac
}

# chromium (the headless browser of the html page test) and soffice (LibreOffice) have
# no program on PATH after `brew install` on macOS, so they are only installed on Linux;
# their tests skip elsewhere.
linux_only() {
    case "$1" in
        systemd-analyze|chromium|chromedriver|soffice) return 0 ;;
        *) return 1 ;;
    esac
}

os="$(uname -s)"
missing=()
for program in "$@"; do
    if [ "$os" != "Linux" ] && linux_only "$program"; then
        continue
    fi
    installed "$program" || missing+=("$program")
done
[ ${#missing[@]} -eq 0 ] && exit 0

packages=()
for program in "${missing[@]}"; do
    read -ra provided <<< "$(package_for "$program")"
    packages+=("${provided[@]}")
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
required=()
for program in "${missing[@]}"; do
    optional "$program" || required+=("$program")
done
if [ ${#required[@]} -eq 0 ]; then
    echo "note: not installed, and I may not install them: ${missing[*]} (packages: ${packages[*]});" \
         "the tests that need them will skip" >&2
    exit 0
fi
echo "spkd needs these programs, which are not installed: ${missing[*]}" >&2
case "$os" in
    Darwin) echo "install them with: brew install ${packages[*]}" >&2 ;;
    *) echo "install them with your package manager, e.g.: sudo apt-get install ${packages[*]}" >&2 ;;
esac
exit 1
