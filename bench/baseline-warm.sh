#!/usr/bin/env bash
# The by-hand baseline on a warm clone: what a person does for one change when the clone exists
# already (made once, outside the timing). It gets the changed files for free and does the git part:
# fetch, reset to the branch, write the changed files, stage the gitlinks, commit, push.
#   baseline-warm.sh URL CLONE_DIR FILES_DIR [FILE ...] [PATH=COMMIT ...]
# FILE is a path under FILES_DIR (the files that changed); PATH=COMMIT a gitlink to move.
set -euo pipefail
url=$1 clone=$2 files=$3
shift 3
if [ ! -d "$clone/.git" ]; then
  git clone -q --branch tier-0 "$url" "$clone"
fi
cd "$clone"
git fetch -q origin
git reset -q --hard origin/tier-0
for arg in "$@"; do
  case "$arg" in
    *=*) git update-index --add --cacheinfo "160000,${arg#*=},${arg%%=*}" ;;
    *)
      mkdir -p "$(dirname "$arg")"
      cp "$files/$arg" "$arg"
      git add "$arg"
      ;;
  esac
done
git -c user.name=someone -c user.email=someone@example.com commit -q -m "one change by hand"
git push -q origin HEAD:tier-0
