"""The funnel page: plain HTML, an inline stylesheet and a small vanilla script that fetches
the stats JSON and draws it as inline SVG. No build step, no CDN, nothing else loaded.

Authentication: the key travels in the address's fragment (`stats.html#key=KEY`). Browsers never
send fragments to servers (so it is in no access log, proxy or Referer), the script moves it to
sessionStorage and removes it from the address bar and history, then sends it as
`Authorization: Bearer KEY` with the one fetch the page makes. The page itself holds no data.
A Content-Security-Policy allows exactly this inline script and style, and requests to this
origin only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import uuid

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1b1f24; }
h1 { font-size: 20px; margin: 0 0 4px; }
#meta { color: #57606a; margin: 0 0 16px; }
#status.error { color: #b3261e; }
svg text { font: 12px system-ui, sans-serif; fill: #1b1f24; }
svg .detail { fill: #57606a; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var app = document.getElementById("funnel-app");
  var journeyId = app.getAttribute("data-journey-id");
  var status = document.getElementById("status");
  var storageKey = "journey-worker-api-key";

  function say(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "";
    document.body.setAttribute("data-state", isError ? "error" : "loading");
  }

  var fragment = new URLSearchParams(location.hash.slice(1));
  var key = fragment.get("key");
  if (key) {
    sessionStorage.setItem(storageKey, key);
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    key = sessionStorage.getItem(storageKey);
  }
  if (!key) {
    say("Open this page as stats.html#key=YOUR_API_KEY to see the journey's funnel.", true);
    return;
  }

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function counts(obj) {
    return Object.keys(obj).sort().map(function (k) { return k + " " + obj[k]; }).join(", ");
  }

  function draw(stats) {
    var nodes = stats.nodes;
    var max = nodes.reduce(function (m, n) { return Math.max(m, n.reached); }, 0) || 1;
    var row = 46, labelWidth = 220, barWidth = 480, width = labelWidth + barWidth + 80;
    var svg = el("svg", {
      id: "funnel", xmlns: SVG, width: width, height: Math.max(row * nodes.length, row),
      viewBox: "0 0 " + width + " " + Math.max(row * nodes.length, row),
      role: "img", "aria-label": "Contacts that reached each node"
    });
    nodes.forEach(function (n, i) {
      var y = i * row;
      var g = el("g", {"class": "node", "data-node-id": n.node_id, "data-reached": n.reached});
      g.appendChild(el("text", {x: 0, y: y + 16}, (i + 1) + ". " + (n.type || "?")));
      g.appendChild(el("rect", {
        "class": "bar", x: labelWidth, y: y + 4, height: 18, rx: 3, fill: "#2f6feb",
        width: Math.max(2, Math.round(barWidth * n.reached / max))
      }));
      g.appendChild(el("text", {"class": "reached", x: labelWidth + barWidth + 8, y: y + 18},
        String(n.reached)));
      var detail = "executions: " + (counts(n.executions) || "none");
      if (Object.keys(n.messages).length) { detail += " | messages: " + counts(n.messages); }
      g.appendChild(el("text", {"class": "detail", x: labelWidth, y: y + 38}, detail));
      svg.appendChild(g);
    });
    var old = document.getElementById("funnel");
    old.parentNode.replaceChild(svg, old);
    document.getElementById("meta").textContent = stats.refreshed_at
      ? "As of " + stats.refreshed_at + " (refreshed periodically)."
      : "Not refreshed yet: every count is 0 until the first refresh.";
    status.textContent = nodes.length + " nodes";
    document.body.setAttribute("data-state", "ready");
  }

  fetch("stats", {headers: {"Authorization": "Bearer " + key}, cache: "no-store"})
    .then(function (response) {
      return response.json().then(function (body) { return {ok: response.ok, body: body}; });
    })
    .then(function (answer) {
      if (!answer.ok) {
        if (answer.body.status === 401) { sessionStorage.removeItem(storageKey); }
        say(answer.body.title + ": " + (answer.body.detail || ""), true);
        return;
      }
      draw(answer.body);
    })
    .catch(function (error) { say("Could not load the stats: " + error, true); });
})();
"""


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; "
        f"script-src 'sha256-{_sha256(SCRIPT)}'; "
        f"style-src 'sha256-{_sha256(STYLE)}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def render(journey_id: uuid.UUID) -> str:
    journey = html.escape(str(journey_id))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Journey funnel {journey}</title>
<style>{STYLE}</style>
</head>
<body data-state="loading">
<main id="funnel-app" data-journey-id="{journey}">
<h1>Journey funnel</h1>
<p id="meta">Journey {journey}</p>
<p id="status">Loading...</p>
<svg id="funnel" width="0" height="0"></svg>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""
