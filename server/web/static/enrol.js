// The enrolment page: issue a one-time token (JSON API + CSRF header) and show what the PC needs:
// the one command, the configuration (download) and a QR code of both. The token is shown once.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : "";
  var button = document.getElementById("enrol-issue-button");
  var errorBox = document.getElementById("enrol-error");
  if (!button) return;
  button.addEventListener("click", function () {
    button.disabled = true;
    errorBox.hidden = true;
    fetch("/api/v1/instruments/" + encodeURIComponent(button.dataset.instrument) + "/enrolment-tokens", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: "{}"
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error((j.error && j.error.message) || r.statusText);
        return j;
      });
    }).then(function (j) {
      document.getElementById("enrol-expires").textContent = j.expires_at;
      document.getElementById("enrol-command").textContent = j.command;
      document.getElementById("enrol-config").textContent = j.config;
      document.getElementById("enrol-download").href =
        "data:application/toml;charset=utf-8," + encodeURIComponent(j.config);
      document.getElementById("enrol-qr").src = j.qr;
      document.getElementById("enrol-result").hidden = false;
    }).catch(function (e) {
      errorBox.hidden = false;
      errorBox.textContent = e.message;
      button.disabled = false;
    });
  });
})();
