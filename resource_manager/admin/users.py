"""rm-users: manage the accounts of the users file (hashed passwords and roles).

Removing an account also deletes its API tokens from the database the server uses (MONGO_URI and
the other RM_* settings, as for rm-sweep), when one is configured and answers. Either way its
tokens are refused from then on: a token names the account it was made for, and a new account
under the same name is another account.
"""

import argparse
import getpass
import os
import sys

import pymongo
import pymongo.errors

from ..api import config as server_config
from ..core import atomic
from ..core import tokens as api_tokens
from ..core.users import UsersFileError, read_users, remove_user, set_user
from ..schema import ROLES


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
        print(f"{args.username}: removed; {_delete_tokens(args.username)}")
    else:
        users = read_users(args.file) if os.path.exists(args.file) else {}
        for name, record in sorted(users.items()):
            print(f"{name}\t{record.get('role', 'reader')}")
    return 0


def _delete_tokens(username):
    """Delete a removed user's API tokens from the server's database; return what happened, in words."""
    refused = "refused anyway, and deleted by the server when next presented"
    try:
        settings = server_config.load()
    except RuntimeError as e:  # no MONGO_URI, or a bad setting
        return f"its API tokens were not deleted ({str(e).split(':')[0]}): {refused}"
    client = pymongo.MongoClient(settings["MONGO_URI"], **settings.get("MONGO_OPTIONS", {}))
    try:
        db = client.get_default_database(settings.get("MONGO_DBNAME"))
        engine = atomic.detect(db, atomic.WriteSettings.from_config(settings))
        count = api_tokens.revoke_user(engine.wrap(db), username)
    except pymongo.errors.PyMongoError as e:
        return f"its API tokens were not deleted (database unavailable: {str(e)[:120]}): {refused}"
    finally:
        client.close()
    return f"{count} API token(s) deleted"


if __name__ == "__main__":
    sys.exit(main())
