# shellcheck shell=sh disable=SC2154
# The env-file reader of a shim: constant text that the shim carries in the
# variable djshim_reader and runs last, either in its own shell or, when it
# switches accounts, as `sh -c "${djshim_reader}"` after the switch, so that
# nothing read here ever reaches the caller's (root's) process.
#
# In: the files on descriptors 3, 4, … (opened and checked by the shim),
# their names in djshim_files (one a line), the shim's name in
# djshim_command, `'` in djshim_sq, CR in djshim_cr, newline in djshim_nl;
# "$@" is the command to exec. Out: every assignment exported, in order,
# later ones winning; the descriptors closed; nothing of djshim_* left.
#
# The syntax is systemd's EnvironmentFile= (its env-file parser, a state
# machine run here a byte at a time for lines that need it): `#`/`;`
# comments at the start of a line; `KEY=VALUE` with blanks around both
# trimmed; single quotes literal, double quotes with \" \\ \` \$ escapes,
# both may span lines and follow one another; outside quotes a backslash
# takes the next byte literally and joins lines; CR ends a line as LF does.
# Like systemd, a line without `=` or with an invalid name is skipped
# (`djshim check` reports it). Nothing is ever evaluated.
# This text may hold no single quote: the shim keeps it in one.

unset -f "[" test printf read cd command true

djshim_push() {
  djshim_key=${djshim_key%"${djshim_key##*[! 	]}"}
  case ${djshim_key} in
    "" | [0-9]* | *[!A-Za-z0-9_]*) return 0 ;;
    LD_* | DJSHIM_* | djshim_* | UID | EUID | PPID | SHELLOPTS | BASHOPTS | GROUPS)
      printf "%s: %s:%s: %s may not be set from an env file: it would steer the loader, djshim or the shell\n" \
        "${djshim_command}" "${djshim_name}" "${djshim_number}" "${djshim_key}" >&2
      exit 78
      ;;
    *) ;;
  esac
  export "${djshim_key}=${djshim_value}"
}

# One byte, djshim_c, through the state machine.
djshim_step() {
  case ${djshim_state} in
    key0)
      case ${djshim_c} in
        [#\;]) djshim_state=comment ;;
        " " | "	" | "${djshim_nl}" | "${djshim_cr}") ;;
        *)
          djshim_state=key
          djshim_key=${djshim_c}
          ;;
      esac
      ;;
    key)
      case ${djshim_c} in
        "${djshim_nl}" | "${djshim_cr}") djshim_state=key0 ;;
        =)
          djshim_state=value0
          djshim_value=
          djshim_blank=
          ;;
        *) djshim_key=${djshim_key}${djshim_c} ;;
      esac
      ;;
    value0)
      case ${djshim_c} in
        "${djshim_nl}" | "${djshim_cr}")
          djshim_push
          djshim_state=key0
          ;;
        "${djshim_sq}") djshim_state=single ;;
        \") djshim_state=double ;;
        \\) djshim_state=escape ;;
        " " | "	") ;;
        *)
          djshim_state=value
          djshim_value=${djshim_value}${djshim_c}
          ;;
      esac
      ;;
    value)
      case ${djshim_c} in
        "${djshim_nl}" | "${djshim_cr}")
          djshim_push
          djshim_state=key0
          ;;
        \\)
          djshim_state=escape
          djshim_value=${djshim_value}${djshim_blank}
          djshim_blank=
          ;;
        " " | "	") djshim_blank=${djshim_blank}${djshim_c} ;;
        *)
          djshim_value=${djshim_value}${djshim_blank}${djshim_c}
          djshim_blank=
          ;;
      esac
      ;;
    escape)
      djshim_state=value
      case ${djshim_c} in
        "${djshim_nl}" | "${djshim_cr}") ;;
        *) djshim_value=${djshim_value}${djshim_c} ;;
      esac
      ;;
    single)
      case ${djshim_c} in
        "${djshim_sq}") djshim_state=value0 ;;
        *) djshim_value=${djshim_value}${djshim_c} ;;
      esac
      ;;
    double)
      case ${djshim_c} in
        \") djshim_state=value0 ;;
        \\) djshim_state=double_escape ;;
        *) djshim_value=${djshim_value}${djshim_c} ;;
      esac
      ;;
    double_escape)
      djshim_state=double
      case ${djshim_c} in
        \" | \\ | \` | \$) djshim_value=${djshim_value}${djshim_c} ;;
        "${djshim_nl}") ;;
        *) djshim_value=${djshim_value}\\${djshim_c} ;;
      esac
      ;;
    comment)
      case ${djshim_c} in
        \\) djshim_state=comment_escape ;;
        "${djshim_nl}" | "${djshim_cr}") djshim_state=key0 ;;
        *) ;;
      esac
      ;;
    *)
      # comment_escape: since systemd 254, the byte after a backslash
      # that ends a comment line starts the next line.
      case ${djshim_c} in
        "${djshim_nl}" | "${djshim_cr}") djshim_state=key0 ;;
        *) djshim_state=comment ;;
      esac
      ;;
  esac
}

# One file, on standard input.
djshim_parse() {
  djshim_state=key0
  djshim_number=0
  djshim_eof=
  while [ -z "${djshim_eof}" ]; do
    if ! IFS= read -r djshim_line; then
      djshim_eof=1
      if [ -z "${djshim_line}" ]; then
        break
      fi
    fi
    djshim_number=$((djshim_number + 1))
    if [ "${djshim_state}" = key0 ]; then
      # A line of printable ASCII without quotes or backslashes, the
      # common case, at once.
      case ${djshim_line} in
        *[\\\"]* | *"${djshim_sq}"* | *[![:print:]"	"]*) ;;
        *)
          djshim_line=${djshim_line#"${djshim_line%%[! 	]*}"}
          case ${djshim_line} in
            "" | [#\;]*) ;;
            *=*)
              djshim_key=${djshim_line%%=*}
              djshim_value=${djshim_line#*=}
              djshim_value=${djshim_value#"${djshim_value%%[! 	]*}"}
              djshim_value=${djshim_value%"${djshim_value##*[! 	]}"}
              djshim_push
              ;;
            *) ;;
          esac
          continue
          ;;
      esac
    fi
    djshim_rest=${djshim_line}
    if [ -z "${djshim_eof}" ]; then
      djshim_rest=${djshim_rest}${djshim_nl}
    fi
    while [ -n "${djshim_rest}" ]; do
      djshim_c=${djshim_rest%"${djshim_rest#?}"}
      djshim_rest=${djshim_rest#?}
      djshim_step
    done
  done
  case ${djshim_state} in
    value0 | value | escape | single | double | double_escape) djshim_push ;;
    *) ;;
  esac
}

djshim_fd=3
djshim_names=${djshim_files}${djshim_nl}
while [ -n "${djshim_names}" ]; do
  djshim_name=${djshim_names%%"${djshim_nl}"*}
  djshim_names=${djshim_names#*"${djshim_nl}"}
  djshim_parse <&"${djshim_fd}"
  eval "exec ${djshim_fd}<&-"
  djshim_fd=$((djshim_fd + 1))
done
unset djshim_files djshim_command djshim_sq djshim_cr djshim_nl djshim_fd \
  djshim_names djshim_name djshim_rest djshim_state djshim_number djshim_eof djshim_line \
  djshim_c djshim_key djshim_value djshim_blank
unset -f djshim_push djshim_step djshim_parse
exec "$@"
