// Registry forms: send the fields as JSON to the API (the server validates, checks scope and
// audits), then mark every field the 422 answer names with its message.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : "";

  function setPath(obj, path, value) {
    var parts = path.split(".");
    var cur = obj;
    for (var i = 0; i < parts.length - 1; i++) {
      var key = /^\d+$/.test(parts[i]) ? Number(parts[i]) : parts[i];
      var nextIsIndex = /^\d+$/.test(parts[i + 1]);
      if (cur[key] === undefined) cur[key] = nextIsIndex ? [] : {};
      cur = cur[key];
    }
    var last = parts[parts.length - 1];
    cur[/^\d+$/.test(last) ? Number(last) : last] = value;
  }

  function collect(form, patch) {
    var body = {};
    Array.prototype.forEach.call(form.querySelectorAll("[name]"), function (el) {
      var type = el.dataset.type || "str";
      if (type === "bool") { body[el.name] = el.checked; return; }
      var v = el.value.trim();
      if (v === "") {
        if (patch && (el.dataset.orig || "") !== "") body[el.name] = null;  // cleared
        return;
      }
      if (patch && v === (el.dataset.orig || "")) return;  // unchanged
      if (el.dataset.kind === "datetime" && !/[zZ]|[+-]\d\d:?\d\d$/.test(v)) {
        v = (v.length === 16 ? v + ":00" : v) + "+08:00";  // people type Beijing time
      }
      if (type === "int" && /^-?\d+$/.test(v)) { setPath(body, el.name, Number(v)); return; }
      setPath(body, el.name, v);
    });
    // a person's identity is optional: drop it when no identifier was given
    if (body.identities && !(body.identities[0] && body.identities[0].identifier)) delete body.identities;
    return body;
  }

  // the page's main form has #form-error / #form-ok; further forms on the page use the classes
  function box(form, which) {
    return form.querySelector("#form-" + which) || form.querySelector(".form-" + which);
  }

  function clear(form) {
    form.querySelectorAll(".field-error").forEach(function (e) { e.remove(); });
    form.querySelectorAll(".invalid").forEach(function (e) { e.classList.remove("invalid"); });
    box(form, "error").hidden = true;
    box(form, "ok").hidden = true;
  }

  // data-api may name body fields in braces (/api/v1/units/{unit_id}/identities): they go in the path
  function target(api, body) {
    return api.replace(/\{(\w+)\}/g, function (_, name) {
      var v = body[name] === undefined ? "" : String(body[name]);
      delete body[name];
      return encodeURIComponent(v);
    });
  }

  function mark(form, f) {
    var el = form.querySelector('[name="' + CSS.escape(f.field) + '"]');
    if (!el && f.field.indexOf(".") > 0) el = form.querySelector('[name="' + CSS.escape(f.field.split(".")[0]) + '"]');
    if (!el) return false;
    el.classList.add("invalid");
    var msg = document.createElement("span");
    msg.className = "field-error";
    msg.dataset.field = f.field;
    msg.textContent = f.message;
    el.closest("label").appendChild(msg);
    return true;
  }

  document.querySelectorAll("form.api-form").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      clear(form);
      var method = form.dataset.method;
      var body = collect(form, method === "PATCH");
      var lang = form.dataset.lang === "en" ? "?lang=en" : "";
      fetch(target(form.dataset.api, body) + lang, {
        method: method, credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body)
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          if (r.ok) {
            box(form, "ok").hidden = false;
            var next = form.dataset.next;
            if (next) location.href = next.replace("{id}", encodeURIComponent(j.id || ""));
            return;
          }
          var err = j.error || { message: r.statusText };
          var errBox = box(form, "error");
          errBox.textContent = err.message;
          errBox.hidden = false;
          (err.fields || []).forEach(function (f) { mark(form, f); });
          var first = form.querySelector(".invalid");
          if (first) first.focus();
        });
      }).catch(function (e) {
        var errBox = box(form, "error");
        errBox.textContent = String(e);
        errBox.hidden = false;
      });
    });
  });

  // remove buttons (an identity mapping): DELETE, then reload the page; action buttons (accept a
  // proposal): the same with data-method (POST)
  document.querySelectorAll("button.api-delete, button.api-call").forEach(function (btn) {
    btn.addEventListener("click", function () {
      btn.disabled = true;
      fetch(btn.dataset.api, {
        method: btn.dataset.method || "DELETE", credentials: "same-origin", headers: { "X-CSRF-Token": csrf }
      }).then(function (r) {
        if (r.ok) { location.href = btn.dataset.next || location.href; return; }
        return r.json().catch(function () { return {}; }).then(function (j) {
          btn.disabled = false;
          btn.title = (j.error && j.error.message) || r.statusText;
          btn.classList.add("invalid");
        });
      });
    });
  });
})();
