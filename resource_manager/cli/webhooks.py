"""rmctl webhook create | list | delete | deliveries: webhooks (admins). The secret is printed once, by create."""

from .commands import output_format, parse_json_object
from .output import write_item, write_items

COLUMNS = ["_id", "url", "events", "where", "description", "created", "created_by", "lost"]
DELIVERY_COLUMNS = ["_id", "type", "state", "attempts", "last_status", "last_error", "created", "next_at",
                    "delivered_at"]


def cmd_create(client, args, env):
    where = parse_json_object(args.where, "--where") if args.where else None
    made = client.create_webhook(args.url, args.event, where=where, description=args.description)
    fmt = output_format(args, env)
    if fmt == "plain":
        env.stdout.write(made["secret"] + "\n")
    else:
        write_item(made, env.stdout, fmt)
    env.note(f"webhook {made['_id']} to {made['url']}: its secret is shown this once; the receiver checks "
             "X-RM-Signature with it")


def cmd_list(client, args, env):
    write_items(client.webhooks(), env.stdout, output_format(args, env), COLUMNS)


def cmd_delete(client, args, env):
    client.delete_webhook(args.hook)
    env.note(f"deleted webhook {args.hook}")


def cmd_deliveries(client, args, env):
    if args.redeliver:
        again = client.redeliver(args.hook, args.redeliver)
        env.note(f"delivery {again['_id']} will be sent again")
        return
    write_items(client.webhook_deliveries(args.hook, args.state, args.limit), env.stdout, output_format(args, env),
                DELIVERY_COLUMNS)


ACTIONS = {"create": cmd_create, "list": cmd_list, "delete": cmd_delete, "deliveries": cmd_deliveries}


def cmd_webhook(client, args, env):
    return ACTIONS[args.webhook_command](client, args, env)


HANDLERS = {"webhook": cmd_webhook}
