# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_djshim_global_optspecs
    string join \n c/config= h/help V/version
end

function __fish_djshim_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_djshim_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_djshim_using_subcommand
    set -l cmd (__fish_djshim_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c djshim -n "__fish_djshim_needs_command" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_needs_command" -s V -l version -d 'Print version'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "init" -d 'Write a commented starter djshim.toml (never overwrites)'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "check" -d 'Validate the config and this machine: packages, interpreters, settings modules'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "generate" -d 'Write the shims, one per instance, into the config\'s bin directory (or --out DIR)'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "list" -d 'One row per instance: shim, package, settings, and whether the shim is up to date'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "show" -d 'Print the shim of one instance exactly as generate would write it'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "pin" -d 'Switch an instance\'s profile to a package, as a new generation'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "rollback" -d 'Switch an instance\'s profile back to the previous generation, or to --to N'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "history" -d 'List the generations of an instance\'s profile, the current one marked'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "status" -d 'What each instance runs: generation, package, commit, content hash, health, units'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "systemd" -d 'Write systemd units: the server, services, jobs and target of each instance'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "cron" -d 'Print /etc/cron.d lines for the jobs, each calling its shim under `flock -n`'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "nixos" -d 'Write the instances as one NixOS module (to stdout, or --out FILE)'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "build" -d 'Build a package from a commit of the repository, never from a working tree'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "deploy" -d 'Move an instance to a new package: check, switch, migrate, restart, probe; undo on failure'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "window" -d 'Open or close an instance\'s deploy window, for a rollout across hosts'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "pack" -d 'Write a release directory as one tar archive, to carry it to another host'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "unpack" -d 'Unpack a release archive, checked against the content hash the build host said'
complete -c djshim -n "__fish_djshim_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c djshim -n "__fish_djshim_using_subcommand init" -l project -d 'The project name [default: the settings package that a manage.py here, beside or one level below names; else a placeholder]' -r
complete -c djshim -n "__fish_djshim_using_subcommand init" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand init" -s h -l help -d 'Print help'
complete -c djshim -n "__fish_djshim_using_subcommand check" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_using_subcommand generate" -s o -l out -d 'Write into DIR instead of the directory the config names' -r
complete -c djshim -n "__fish_djshim_using_subcommand generate" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand generate" -s n -l dry-run -d 'Print a unified diff of what would change; write nothing'
complete -c djshim -n "__fish_djshim_using_subcommand generate" -l force -d 'Overwrite files that djshim did not write, and own them from now on'
complete -c djshim -n "__fish_djshim_using_subcommand generate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_using_subcommand list" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand list" -s h -l help -d 'Print help'
complete -c djshim -n "__fish_djshim_using_subcommand show" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand show" -s h -l help -d 'Print help'
complete -c djshim -n "__fish_djshim_using_subcommand pin" -l keep -d 'Afterwards, delete all but the newest N generations (never the current one)' -r
complete -c djshim -n "__fish_djshim_using_subcommand pin" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand pin" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_using_subcommand rollback" -l to -d 'Switch to generation N instead of the one before the current' -r
complete -c djshim -n "__fish_djshim_using_subcommand rollback" -l to-package -d 'Switch to the newest generation (up to the current one) that runs this package: a release that has another generation number on each host of a fleet' -r
complete -c djshim -n "__fish_djshim_using_subcommand rollback" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand rollback" -l skip-shared -d 'Leave the `[deploy] shared` commands (`migrate`, by default) to the rollout\'s first host, whose own rollback takes the database back'
complete -c djshim -n "__fish_djshim_using_subcommand rollback" -s h -l help -d 'Print help'
complete -c djshim -n "__fish_djshim_using_subcommand history" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand history" -s h -l help -d 'Print help'
complete -c djshim -n "__fish_djshim_using_subcommand status" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand status" -l json -d 'One JSON object: `{"project": …, "instances": {NAME: {…}}}`'
complete -c djshim -n "__fish_djshim_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_using_subcommand systemd" -s o -l out -d 'Write into DIR instead of the directory the config names' -r
complete -c djshim -n "__fish_djshim_using_subcommand systemd" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand systemd" -s n -l dry-run -d 'Print a unified diff of what would change; write nothing'
complete -c djshim -n "__fish_djshim_using_subcommand systemd" -l force -d 'Overwrite files that djshim did not write, and own them from now on'
complete -c djshim -n "__fish_djshim_using_subcommand systemd" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_using_subcommand cron" -l bin -d 'Where the shims are installed [default: the config\'s bin directory]' -r
complete -c djshim -n "__fish_djshim_using_subcommand cron" -l lock-dir -d 'Where the lock files of `flock -n` live: a directory only root can write (the cron lines make it, mode 0700, when it is missing)' -r
complete -c djshim -n "__fish_djshim_using_subcommand cron" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand cron" -s h -l help -d 'Print help'
complete -c djshim -n "__fish_djshim_using_subcommand nixos" -l out -d 'Write the module to FILE (atomically) instead of stdout' -r
complete -c djshim -n "__fish_djshim_using_subcommand nixos" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand nixos" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_using_subcommand build" -l ref -d 'The branch, tag or commit to build [default: `[build]`\'s ref, else HEAD]' -r
complete -c djshim -n "__fish_djshim_using_subcommand build" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand build" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_using_subcommand deploy" -l ref -d 'Build this branch, tag or commit and deploy it [default: `[build]`\'s ref]' -r
complete -c djshim -n "__fish_djshim_using_subcommand deploy" -l path -d 'Deploy this package (a store path, a release directory)' -r
complete -c djshim -n "__fish_djshim_using_subcommand deploy" -l from -d 'Deploy exactly the package that instance OTHER runs now (promote)' -r
complete -c djshim -n "__fish_djshim_using_subcommand deploy" -l hash -d 'Refuse a candidate whose content hash (`djshim status`) is not this: the bytes that were built, brought to this host' -r
complete -c djshim -n "__fish_djshim_using_subcommand deploy" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand deploy" -l allow-irreversible -d 'Switch even to a candidate whose new migrations cannot be reversed'
complete -c djshim -n "__fish_djshim_using_subcommand deploy" -l skip-shared -d 'Leave the `[deploy] shared` commands (`migrate`, by default) to another host of a rollout across hosts, which deploys first and migrates the database they share; refused while the database lacks the candidate\'s migrations'
complete -c djshim -n "__fish_djshim_using_subcommand deploy" -l prepare -d 'Ask everything a deploy asks (the candidate, its hash, the deep check as the instance\'s account, the migrations and the refusals) and stop there: nothing of the instance changes but its state directory, made when missing (a --ref candidate is built, as a deploy builds it)'
complete -c djshim -n "__fish_djshim_using_subcommand deploy" -l json -d 'With --prepare: what was found, as one JSON object'
complete -c djshim -n "__fish_djshim_using_subcommand deploy" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_using_subcommand window" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand window" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_using_subcommand pack" -l out -d 'The archive to write (replaced atomically)' -r
complete -c djshim -n "__fish_djshim_using_subcommand pack" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand pack" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_using_subcommand unpack" -l hash -d 'The content hash `djshim pack` said on the build host' -r
complete -c djshim -n "__fish_djshim_using_subcommand unpack" -l into -d 'Where the releases of this host are [default: `[build] releases_dir`]' -r
complete -c djshim -n "__fish_djshim_using_subcommand unpack" -s c -l config -d 'The config file [default: ./djshim.toml]' -r
complete -c djshim -n "__fish_djshim_using_subcommand unpack" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "init" -d 'Write a commented starter djshim.toml (never overwrites)'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "check" -d 'Validate the config and this machine: packages, interpreters, settings modules'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "generate" -d 'Write the shims, one per instance, into the config\'s bin directory (or --out DIR)'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "list" -d 'One row per instance: shim, package, settings, and whether the shim is up to date'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "show" -d 'Print the shim of one instance exactly as generate would write it'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "pin" -d 'Switch an instance\'s profile to a package, as a new generation'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "rollback" -d 'Switch an instance\'s profile back to the previous generation, or to --to N'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "history" -d 'List the generations of an instance\'s profile, the current one marked'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "status" -d 'What each instance runs: generation, package, commit, content hash, health, units'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "systemd" -d 'Write systemd units: the server, services, jobs and target of each instance'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "cron" -d 'Print /etc/cron.d lines for the jobs, each calling its shim under `flock -n`'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "nixos" -d 'Write the instances as one NixOS module (to stdout, or --out FILE)'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "build" -d 'Build a package from a commit of the repository, never from a working tree'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "deploy" -d 'Move an instance to a new package: check, switch, migrate, restart, probe; undo on failure'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "window" -d 'Open or close an instance\'s deploy window, for a rollout across hosts'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "pack" -d 'Write a release directory as one tar archive, to carry it to another host'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "unpack" -d 'Unpack a release archive, checked against the content hash the build host said'
complete -c djshim -n "__fish_djshim_using_subcommand help; and not __fish_seen_subcommand_from init check generate list show pin rollback history status systemd cron nixos build deploy window pack unpack help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
