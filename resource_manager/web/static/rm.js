// Small enhancements only: every page reads and works without JavaScript.
document.documentElement.classList.add("js");
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  var live = document.querySelector("[data-live]");
  if (live && window.EventSource && window.fetch && window.DOMParser) follow(live);
});

// Live updates: listen to the event stream (GET /events) and, after a change, fetch this page again and swap
// in its parts named by data-live-parts (element ids). The server renders them, as on a reload.
function follow(root) {
  var parts = root.dataset.liveParts.split(" ");
  var badge = document.getElementById("live");
  var lastId = null, timer = null, busy = false, again = false, retry = 5000, settling = null, changed = false;
  // Counts are renewed by the server once older than data-live-settle seconds: look again after that.
  var settle = (parseFloat(root.dataset.liveSettle) || 0) * 1000;

  function show(state, title) {
    if (!badge) return;
    badge.dataset.state = state;
    badge.title = title;
    badge.hidden = false;
  }

  function refresh() {
    timer = null;
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, {headers: {"Accept": "text/html"}, credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        parts.forEach(function (id) {
          var now = document.getElementById(id), next = fresh.getElementById(id);
          if (now && next) now.replaceWith(document.importNode(next, true));
        });
        document.dispatchEvent(new CustomEvent("rm:refreshed"));
        if (settle > 0 && changed && !settling) {  // once per burst of changes, not for ever
          changed = false;
          settling = window.setTimeout(function () { settling = null; soon(); }, settle + 1000);
        }
      })
      .catch(function () { /* the next event tries again */ })
      .then(function () {
        busy = false;
        if (again) { again = false; soon(); }
      });
  }

  function soon() {
    if (!timer) timer = window.setTimeout(refresh, 300);  // one fetch for a burst of events
  }

  function heard(event) {
    lastId = event.lastEventId;
    changed = true;
    soon();
  }

  function connect() {
    var url = root.dataset.live + (lastId !== null ? "?last_event_id=" + encodeURIComponent(lastId) : "");
    var source = new EventSource(url);
    source.onopen = function () { retry = 5000; show("open", "updating live"); };
    source.onmessage = heard;
    // Every documented event type (docs/reference/events.md); EventSource hears named events one name at a time.
    ["machine", "reservation", "address"].forEach(function (kind) {
      ["created", "updated", "deleted", "queued", "granted", "extended", "released", "expired", "cancelled",
       "timed_out", "allocated"].forEach(function (verb) {
        source.addEventListener(kind + "." + verb, heard);
      });
    });
    source.addEventListener("events.lost", heard);
    source.onerror = function () {
      if (source.readyState !== EventSource.CLOSED) { show("reconnecting", "reconnecting"); return; }
      // Refused (503: the server's streams are all taken) or gone: try again later, then catch up.
      show("closed", "not updating live; reload to see changes");
      window.setTimeout(function () { connect(); soon(); }, retry);
      retry = Math.min(retry * 2, 120000);
    };
  }

  connect();
}
