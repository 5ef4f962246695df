"""rm-users: manage the accounts of the users file (hashed passwords and roles)."""

import argparse
import getpass
import os
import sys

from ..api.auth import ROLES, UsersFileError, read_users, remove_user, set_user


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="rm-users", description=__doc__,
        epilog="examples:\n  rm-users --file /etc/resource-manager/users.json add ci-bot --role operator\n"
               "  echo \"$PW\" | rm-users add alice --role admin --password-stdin\n  rm-users list",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default=os.environ.get("RM_USERS_FILE"),
                        help="users file (RM_USERS_FILE)")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="create an account or change its password/role")
    add.add_argument("username")
    add.add_argument("--role", choices=ROLES, default="reader")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    rm = sub.add_parser("remove", help="delete an account")
    rm.add_argument("username")
    sub.add_parser("list", help="list accounts and roles (never passwords)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args)
    except UsersFileError as e:
        print(f"rm-users: {args.file}: {e}; fix it by hand (nothing was changed)", file=sys.stderr)
        return 1


def _run(args):
    if not args.file:
        print("rm-users: no users file: pass --file or set RM_USERS_FILE", file=sys.stderr)
        return 2
    if args.command == "add":
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"password for {args.username}: ")
            if password != getpass.getpass("again: "):
                print("rm-users: passwords differ", file=sys.stderr)
                return 2
        if len(password) < 8 and not args.password_stdin:
            print("rm-users: use at least 8 characters", file=sys.stderr)
            return 2
        set_user(args.file, args.username, password, args.role)
        print(f"{args.username}: {args.role}")
    elif args.command == "remove":
        if not remove_user(args.file, args.username):
            print(f"rm-users: no user '{args.username}'", file=sys.stderr)
            return 4
    else:
        users = read_users(args.file) if os.path.exists(args.file) else {}
        for name, record in sorted(users.items()):
            print(f"{name}\t{record.get('role', 'reader')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
