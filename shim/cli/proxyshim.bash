# bash completion for proxyshim(1), installed as share/bash-completion/completions/proxyshim:
# its options, the words of the options whose value is one of a list, files where a value is a
# file, then COMMAND and COMMAND's own arguments (with bash-completion's help when loaded).
# The lists follow the settings table (shim/core/settings_table.h); tests/e2e/test_wrapper.py
# checks them against the table and against `proxyshim --help`.

_proxyshim()
{
	local cur=$2 opt='' cmd='' i v w prefix=''
	local valued=' --trusted --protocol --mode --ports --timeout-ms --consume --lazy-grace
		--untrusted --local-addr --keep-tlvs --tlv-max --max-parked --defer-accept --log
		--stats --config '
	local flags='--check --supervise --no-supervise --no-io-uring --help --version'
	valued=${valued//[[:space:]]/ } # one space between words, for the " $w " match below
	COMPREPLY=()

	# Where COMP_CWORD is: an option's value, COMMAND or after it, or an option. bash splits
	# --opt=VALUE at '=' (COMP_WORDBREAKS): "--opt" "=" "VALUE".
	i=1
	while ((i < COMP_CWORD)); do
		w=${COMP_WORDS[i]}
		if [[ $w == -- ]]; then
			cmd=$((i + 1))
			break
		elif [[ $valued == *" $w "* ]]; then
			v=$((i + 1))
			[[ ${COMP_WORDS[v]} == = ]] && v=$((i + 2))
			if ((v >= COMP_CWORD)); then
				opt=$w
				break
			fi
			i=$((v + 1))
		elif [[ $w == -* ]]; then
			i=$((i + 1))
		else
			cmd=$i
			break
		fi
	done
	[[ $cur == = ]] && cur=
	if [[ -z $opt && -z $cmd && $cur == --*=* ]]; then
		# --opt=VALUE in one word ('=' not in COMP_WORDBREAKS)
		opt=${cur%%=*}
		prefix=$opt=
		cur=${cur#*=}
		[[ $valued == *" $opt "* ]] || return 0
	fi

	if [[ -n $opt ]]; then
		case $opt in
		--protocol) w='v1 v2 any' ;;
		--mode) w='strict optional' ;;
		--consume) w='accept lazy' ;;
		--untrusted) w='pass reject' ;;
		--local-addr) w='real header' ;;
		--keep-tlvs | --defer-accept) w='0 1' ;;
		--log) w='off error warn info debug' ;;
		--stats | --config)
			compopt -o filenames 2>/dev/null
			mapfile -t COMPREPLY < <(compgen -f -- "$cur")
			return 0
			;;
		*) return 0 ;; # addresses, ports, numbers: nothing to offer
		esac
		mapfile -t COMPREPLY < <(compgen -P "$prefix" -W "$w" -- "$cur")
		return 0
	fi
	if [[ -n $cmd && $cmd -lt $COMP_CWORD ]]; then
		# COMMAND's arguments: its own completion, as sudo(8)'s does
		if declare -F _comp_command_offset >/dev/null; then
			_comp_command_offset "$cmd"
		elif declare -F _command_offset >/dev/null; then
			_command_offset "$cmd"
		else
			compopt -o filenames 2>/dev/null
			mapfile -t COMPREPLY < <(compgen -f -- "$cur")
		fi
		return 0
	fi
	if [[ -z $cmd && $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$valued $flags -h" -- "$cur")
		return 0
	fi
	# COMMAND: a name in PATH, or a path
	compopt -o filenames 2>/dev/null
	if [[ $cur == */* ]]; then
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
	else
		mapfile -t COMPREPLY < <(compgen -c -- "$cur")
	fi
	return 0
}
complete -F _proxyshim proxyshim
