// Bookings: the public request form posts JSON and opens the applicant's page by the code it gets
// back; buttons with data-api POST (with the CSRF token when logged in) and reload the page (also
// the alert channels' test buttons on /alerts).
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : "";
  function headers() {
    var h = { "Content-Type": "application/json" };
    if (csrf) h["X-CSRF-Token"] = csrf;
    return h;
  }
  var form = document.getElementById("booking-form");
  if (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var body = {};
      Array.prototype.forEach.call(form.querySelectorAll("[name]"), function (el) {
        var v = el.value.trim();
        if (v === "") return;
        if (el.type === "datetime-local") v = (v.length === 16 ? v + ":00" : v) + "+08:00";  // Beijing time
        body[el.name] = v;
      });
      var lang = form.dataset.lang === "en" ? "?lang=en" : "";
      fetch(form.dataset.api + lang, { method: "POST", credentials: "same-origin", headers: headers(),
                                       body: JSON.stringify(body) })
        .then(function (r) {
          return r.json().catch(function () { return {}; }).then(function (j) {
            if (r.ok) { location.href = "/booking/" + encodeURIComponent(j.code); return; }
            var box = document.getElementById("booking-error");
            box.textContent = (j.error && j.error.message) || r.statusText;
            box.hidden = false;
          });
        });
    });
  }
  document.querySelectorAll("button.api-post").forEach(function (btn) {
    btn.addEventListener("click", function () {
      btn.disabled = true;
      fetch(btn.dataset.api, { method: "POST", credentials: "same-origin", headers: headers(), body: "{}" })
        .then(function (r) {
          if (r.ok) { location.reload(); return; }
          return r.json().catch(function () { return {}; }).then(function (j) {
            btn.disabled = false;
            btn.title = (j.error && j.error.message) || r.statusText;
            btn.classList.add("invalid");
          });
        });
    });
  });
})();
