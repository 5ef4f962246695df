"""rmctl webhook create | list | delete | deliveries: webhooks (admins). The secret is printed once, by create."""

from .command import Command, output_option
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


def _create_arguments(p):
    p.add_argument("url", help="where events are POSTed (http:// or https://)")
    p.add_argument("--event", action="append", required=True, metavar="TYPE",
                   help="an event type, kind.* or *; repeat for several")
    p.add_argument("--where", help="only events matching this MongoDB filter on {type, data}, as JSON")
    p.add_argument("--description", help="what the hook is for")
    output_option(p, extra=("plain",))


def _delete_arguments(p):
    p.add_argument("hook", metavar="ID", help="the webhook's id (wh_...)")


def _deliveries_arguments(p):
    p.add_argument("hook", metavar="ID", help="the webhook's id (wh_...)")
    p.add_argument("--state", choices=("pending", "delivering", "delivered", "failed"))
    p.add_argument("--limit", type=_positive, help="at most this many (100 at most)")
    p.add_argument("--redeliver", metavar="DELIVERY", help="send this delivery again instead of listing")
    output_option(p)


def _positive(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


COMMANDS = (
    Command("webhook", "register, list and delete webhooks, and read their deliveries (admins)", """examples:
  {prog} webhook create https://ci.example.com/rm --event reservation.granted --event 'machine.*'
  {prog} webhook list
  {prog} webhook deliveries wh_0123456789abcdef --state failed
  {prog} webhook delete wh_0123456789abcdef""", actions=(
        Command("create", "register a webhook: each matching event is POSTed to URL, signed; the secret is printed "
                          "once", """\
Types: machine.created|updated|deleted, reservation.queued|granted|extended|released|expired|
cancelled|timed_out, address.allocated|released|created|updated|deleted; kind.* for a whole kind, * for all.
--where: a MongoDB filter on the event ({{"type", "data"}}). The URL's host must be allowed by the server's
WEBHOOK_ALLOW. Receivers check X-RM-Signature: t=<time>,v1=<HMAC-SHA256 of "<t>.<body>" with the secret>.

examples:
  {prog} webhook create https://ci.example.com/rm --event reservation.granted
  {prog} webhook create https://chat.example.com/hook --event 'machine.*' --where '{{"data.job_id": "build-42"}}'
  SECRET=$({prog} webhook create https://ci.example.com/rm --event '*' --format plain)""", _create_arguments,
                cmd_create),
        Command("list", "list the webhooks (never their secrets)", """examples:
  {prog} webhook list --format json""", output_option, cmd_list),
        Command("delete", "delete a webhook and its delivery log", """examples:
  {prog} webhook delete wh_0123456789abcdef""", _delete_arguments, cmd_delete),
        Command("deliveries", "show a webhook's deliveries, newest first, or send one again", """examples:
  {prog} webhook deliveries wh_0123456789abcdef
  {prog} webhook deliveries wh_0123456789abcdef --state failed --format json
  {prog} webhook deliveries wh_0123456789abcdef --redeliver wh_0123456789abcdef:42""", _deliveries_arguments,
                cmd_deliveries),
    )),
)
