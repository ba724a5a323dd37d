# Shared helpers for the scripts in this folder (sourced, not executed).

# Prints a command so that it can be pasted into a shell; plain words stay unescaped.
print_cmd() {
  local word line=""
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_./=+,:@%-]+$ ]]; then
      line+="$word "
    else
      line+="$(printf '%q' "$word") "
    fi
  done
  echo "${line% }"
}
