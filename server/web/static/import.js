// Spreadsheet import: dry run -> per-row report -> confirm (the same file, checked by its SHA-256).
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : "";
  var form = document.getElementById("import-form");
  var confirmBtn = document.getElementById("import-confirm");
  var errorBox = document.getElementById("import-error");
  var text = JSON.parse(document.getElementById("import-text").textContent);
  var kindSel = document.getElementById("import-kind");
  var lastSha = null;

  function showKindHelp() {
    var opt = kindSel.options[kindSel.selectedIndex];
    document.getElementById("kind-help").textContent = opt ? opt.title : "";
  }
  kindSel.addEventListener("change", function () { showKindHelp(); reset(); });
  document.getElementById("import-file").addEventListener("change", reset);
  showKindHelp();

  function reset() { lastSha = null; confirmBtn.disabled = true; }

  function send(dryRun) {
    errorBox.hidden = true;
    var file = document.getElementById("import-file").files[0];
    if (!file) { errorBox.textContent = text.no_file; errorBox.hidden = false; return; }
    var data = new FormData();
    data.append("kind", kindSel.value);
    data.append("unit_id", form.elements.unit_id.value);
    data.append("dry_run", dryRun ? "true" : "false");
    if (!dryRun && lastSha) data.append("expect_sha256", lastSha);
    data.append("file", file, file.name);
    var lang = form.dataset.lang === "en" ? "?lang=en" : "";
    fetch("/api/v1/imports" + lang, { method: "POST", credentials: "same-origin",
                                      headers: { "X-CSRF-Token": csrf }, body: data })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          if (!r.ok) throw new Error((j.error && j.error.message) || r.statusText);
          show(j);
        });
      })
      .catch(function (e) { errorBox.textContent = e.message; errorBox.hidden = false; });
  }

  function show(rep) {
    document.getElementById("import-report").hidden = false;
    document.getElementById("import-status").textContent = text["st_" + rep.status] || rep.status;
    var summary = document.getElementById("import-summary");
    summary.textContent = summary.dataset.template.replace("{a}", rep.accepted).replace("{r}", rep.rejected);
    var probs = document.getElementById("import-problems");
    var ul = probs.querySelector("ul");
    ul.innerHTML = "";
    (rep.problems || []).forEach(function (p) { var li = document.createElement("li"); li.textContent = p; ul.appendChild(li); });
    probs.hidden = !(rep.problems || []).length;
    var body = document.querySelector("#import-rows tbody");
    body.innerHTML = "";
    (rep.rows || []).forEach(function (row) {
      var tr = document.createElement("tr");
      tr.className = "row-" + row.status;
      [String(row.row), text[row.status] || row.status, row.key || "", (row.errors || []).join("；")].forEach(function (v) {
        var td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    if (rep.status === "dry_run" && rep.ok) { lastSha = rep.sha256; confirmBtn.disabled = false; }
    else { reset(); }
  }

  form.addEventListener("submit", function (ev) { ev.preventDefault(); send(true); });
  confirmBtn.addEventListener("click", function () { if (lastSha) send(false); });
})();
