# Shared by the scripts that stage an image's root file system from this
# machine's files (node-rootfs.sh, tools-rootfs.sh). Sourced; expects $dir,
# the root being staged.

copy() { # copy SRC [DEST]: the file's content at DEST (default: same path)
  local dest=$dir${2:-$1}
  mkdir -p "$(dirname "$dest")"
  cp -L --preserve=mode "$1" "$dest"
}

libs() { # the shared libraries a binary loads, and the loader
  ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
}
