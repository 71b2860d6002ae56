// Registry actions: issue an enrolment token (shown once), revoke a key. JSON API + CSRF header.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : "";
  var errorBox = document.getElementById("action-error");

  function call(method, url, body) {
    return fetch(url, {
      method: method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: body ? JSON.stringify(body) : undefined
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error((j.error && j.error.message) || r.statusText);
        return j;
      });
    });
  }
  function fail(e) { errorBox.hidden = false; errorBox.textContent = e.message; }

  document.querySelectorAll("button.enrol").forEach(function (b) {
    b.addEventListener("click", function () {
      call("POST", "/api/v1/instruments/" + encodeURIComponent(b.dataset.instrument) + "/enrolment-tokens", {})
        .then(function (j) {
          var help = document.getElementById("enrol-help");
          help.textContent = help.dataset.template.replace("{expires}", j.expires_at);
          document.getElementById("enrol-config").textContent = j.config;
          document.getElementById("enrol-commands").textContent = j.commands.join("\n");
          document.getElementById("enrol-dialog").showModal();
        }).catch(fail);
    });
  });
  document.querySelectorAll("button.revoke-key").forEach(function (b) {
    b.addEventListener("click", function () {
      if (!confirm(b.textContent + " " + b.dataset.key + "?")) return;
      call("POST", "/api/v1/agents/" + encodeURIComponent(b.dataset.agent) + "/keys/" + encodeURIComponent(b.dataset.key) + "/revoke")
        .then(function () { location.reload(); }).catch(fail);
    });
  });
})();
