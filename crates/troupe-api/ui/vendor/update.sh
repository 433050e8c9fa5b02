#!/usr/bin/env bash
# Re-vendors the web UI's libraries from the npm registry at the versions in VERSIONS.
# Usage: crates/troupe-api/ui/vendor/update.sh   (needs npm; edit VERSIONS first to upgrade)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
specs=()
while read -r name version; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    specs+=("$name@$version")
done < "$here/VERSIONS"
npm pack --silent "${specs[@]}" >/dev/null
for tgz in *.tgz; do
    mkdir -p "${tgz%.tgz}"
    tar xzf "$tgz" -C "${tgz%.tgz}"
done
cp preact-*/package/dist/preact.mjs "$here/preact.mjs"
# preact/hooks imports the bare specifier "preact": without a bundler or an import map (an
# inline script, which the Content-Security-Policy forbids), point it at the file next to it.
sed 's#from"preact"#from"./preact.mjs"#' preact-*/package/hooks/dist/hooks.mjs > "$here/hooks.mjs"
grep -q 'from"./preact.mjs"' "$here/hooks.mjs"
cp htm-*/package/dist/htm.mjs "$here/htm.mjs"
cp ansi_up-*/package/ansi_up.js "$here/ansi_up.js"
rm -rf "$here/yaml"
cp -r yaml-*/package/browser/dist "$here/yaml"
for pkg in preact htm ansi_up yaml; do
    cp "$pkg"-*/package/LICENSE "$here/LICENSE.$pkg"
done
echo "vendored: ${specs[*]}"
