# Sourced by tests/run.sh and bench/run.sh: install missing Debian packages in one apt call.
#
#   need COMMAND PACKAGE    PACKAGE is installed if COMMAND is not on the PATH
#   need_venv               python3-venv if Python cannot create a venv
#   install_needed          one `apt-get install` of everything asked for (sudo when not root)
apt_packages=()
need() { command -v "$1" >/dev/null 2>&1 || apt_packages+=("$2"); }
need_venv() { python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_packages+=(python3-venv); }
install_needed() {
    [ ${#apt_packages[@]} -gt 0 ] || return 0
    printf '\n==> installing Debian packages: %s\n' "${apt_packages[*]}" >&2
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
}
