// Phone check-in (/c/<code>): post 上机登记 / 下机登记 to the API (CSRF header), then poll the
// request until the agent's signed session record is stored (or it is kept as manual). The label
// page's "new code" button posts to the API and reloads.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : "";
  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error((j.error && j.error.message) || r.statusText);
        return j;
      });
    });
  }
  var regen = document.getElementById("label-regenerate");
  if (regen) {
    regen.addEventListener("click", function () {
      regen.disabled = true;
      post("/api/v1/instruments/" + encodeURIComponent(regen.dataset.instrument) + "/checkin-code", {})
        .then(function () { window.location.reload(); })
        .catch(function (e) { regen.disabled = false; alert(e.message); });
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll(".manual-decide"), function (b) {
    b.addEventListener("click", function () {
      b.disabled = true;
      post("/api/v1/checkin/requests/" + b.dataset.request + "/decision", { decision: b.dataset.decision })
        .then(function () { window.location.reload(); })
        .catch(function (e) { b.disabled = false; alert(e.message); });
    });
  });
  var page = document.getElementById("checkin");
  if (!page) return;
  var out = document.getElementById("checkin-result");
  // the instrument's status, refreshed while the page is open (a phone page has no live stream)
  var stateEl = document.getElementById("checkin-state");
  var offline = document.getElementById("checkin-offline");
  function refresh() {
    fetch("/api/v1/checkin/" + encodeURIComponent(page.dataset.code) + "/status", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (j) {
        if (!j) return;
        var label = stateEl.dataset[j.status.replace(/_([a-z])/g, function (m, c) { return c.toUpperCase(); })];
        stateEl.textContent = label || j.status;
        stateEl.parentNode.dataset.status = j.status;
        offline.hidden = j.agent_online;
      }).catch(function () { /* offline phone: try again later */ });
  }
  setInterval(refresh, 5000);
  if (!out) return;
  var buttons = [document.getElementById("checkin-in"), document.getElementById("checkin-out")];
  function show(text, cls) { out.textContent = text; out.className = cls || ""; }
  function poll(id, action, until) {
    fetch("/api/v1/checkin/requests/" + id, { credentials: "same-origin" }).then(function (r) { return r.json(); })
      .then(function (j) {
        out.dataset.state = j.status;
        if (j.status === "done") {
          show(action === "checkin" ? out.dataset.doneIn : out.dataset.doneOut, "ok-box");
          buttons[0].disabled = action === "checkin";
          buttons[1].disabled = action !== "checkin";
        } else if (j.status === "sent" && Date.now() < until) {
          setTimeout(function () { poll(id, action, until); }, 250);
        } else {
          show(out.dataset.noAnswer, "alert");
          buttons.forEach(function (b) { b.disabled = false; });
        }
      });
  }
  buttons.forEach(function (b) {
    if (!b) return;
    b.addEventListener("click", function () {
      var picked = document.querySelector('input[name="booking"]:checked');
      var body = { action: b.dataset.action };
      if (b.dataset.action === "checkin" && picked && picked.value) body.booking_id = parseInt(picked.value, 10);
      buttons.forEach(function (x) { x.disabled = true; });
      out.dataset.state = "sending";
      show(out.dataset.sent, "");
      post("/api/v1/checkin/" + encodeURIComponent(page.dataset.code), body).then(function (j) {
        out.dataset.state = j.status;
        if (j.status === "manual") {
          show(out.dataset.manual, "alert");
          buttons[0].disabled = b.dataset.action === "checkin";
          buttons[1].disabled = b.dataset.action !== "checkin";
        } else if (j.status === "sent") {
          poll(j.id, b.dataset.action, Date.now() + 12000);
        } else {
          show(out.dataset.noAnswer, "alert");
          buttons.forEach(function (x) { x.disabled = false; });
        }
      }).catch(function (e) {
        show(e.message, "alert");
        buttons.forEach(function (x) { x.disabled = false; });
      });
    });
  });
})();
