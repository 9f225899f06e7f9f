"""`supervisor completion bash|zsh|fish`: shell completion generated from the argparse parser.

Pure: the parser is read (its subcommands, their options, the choices of each), never a hand
kept list, so a new command or option completes as soon as it exists.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

SHELLS = ("bash", "zsh", "fish")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    options: tuple[str, ...]  # every --long and -s spelling
    choices: tuple[str, ...]  # the values of a positional with choices (service print|install…)


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                options = tuple(o for a in sub._actions for o in a.option_strings)
                choices = tuple(
                    str(c)
                    for a in sub._actions
                    if not a.option_strings and a.choices is not None
                    for c in a.choices
                )
                found.append(Command(name, helps.get(name, ""), options, choices))
    return found


def _top_options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings]


def render(shell: str, parser: argparse.ArgumentParser) -> str:
    match shell:
        case "bash":
            return _bash(parser)
        case "zsh":
            return _zsh(parser)
        case "fish":
            return _fish(parser)
    raise ValueError(shell)


def _bash(parser: argparse.ArgumentParser) -> str:
    cmds = commands(parser)
    cases = "\n".join(
        f'        {c.name}) words_="{" ".join((*c.options, *c.choices))}" ;;' for c in cmds
    )
    top = " ".join([*(c.name for c in cmds), *_top_options(parser)])
    return f"""# bash completion for supervisor (generated: supervisor completion bash)
_supervisor() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} cmd="" i words_=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${{COMP_WORDS[i]}} in -*) ;; *) cmd=${{COMP_WORDS[i]}}; break ;; esac
    done
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "{top}" -- "$cur"))
        return
    fi
    case $cmd in
{cases}
    esac
    if [[ $cur == -* || -n $words_ ]]; then
        COMPREPLY=($(compgen -W "$words_" -- "$cur"))
    fi
    [[ ${{#COMPREPLY[@]}} -eq 0 ]] && COMPREPLY=($(compgen -f -- "$cur"))
    return 0
}}
complete -F _supervisor supervisor
"""


def _quote_zsh(text: str) -> str:
    return text.replace("'", "'\\''").replace(":", "\\:").replace("[", "(").replace("]", ")")


def _zsh(parser: argparse.ArgumentParser) -> str:
    cmds = commands(parser)
    described = "\n".join(f"        '{c.name}:{_quote_zsh(c.help)}'" for c in cmds)
    cases = "\n".join(
        f"        {c.name}) _values 'option' {' '.join(repr(w) for w in (*c.options, *c.choices))} "
        "&& return ;;"
        for c in cmds
        if c.options or c.choices
    )
    return f"""#compdef supervisor
# zsh completion for supervisor (generated: supervisor completion zsh)
_supervisor() {{
    local -a cmds
    cmds=(
{described}
    )
    if (( CURRENT == 2 )); then
        _describe 'command' cmds
        return
    fi
    case $words[2] in
{cases}
    esac
    _files
}}
compdef _supervisor supervisor
"""


def _fish(parser: argparse.ArgumentParser) -> str:
    cmds = commands(parser)
    names = " ".join(c.name for c in cmds)
    lines = [
        "# fish completion for supervisor (generated: supervisor completion fish)",
        "complete -c supervisor -f",
    ]
    for c in cmds:
        desc = c.help.replace("'", "\\'")
        lines.append(
            f"complete -c supervisor -n 'not __fish_seen_subcommand_from {names}' "
            f"-a {c.name} -d '{desc}'"
        )
        for option in c.options:
            flag = f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"
            lines.append(f"complete -c supervisor -n '__fish_seen_subcommand_from {c.name}' {flag}")
        if c.choices:
            lines.append(
                f"complete -c supervisor -n '__fish_seen_subcommand_from {c.name}' "
                f"-a '{' '.join(c.choices)}'"
            )
    return "\n".join(lines) + "\n"
