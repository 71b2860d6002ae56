// Live board: keep the tiles current from the unit's server-sent event stream.
(function () {
  "use strict";
  var board = document.getElementById("board");
  if (!board) return;
  var unit = board.dataset.unit;
  var labels = JSON.parse(board.dataset.labels);
  var status = document.getElementById("live-status");

  function fmtSince(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    // Asia/Shanghai wall time, whatever the device's zone
    var sh = new Date(d.getTime() + (d.getTimezoneOffset() + 480) * 60000);
    var text = pad(sh.getMonth() + 1) + "-" + pad(sh.getDate()) + " " + pad(sh.getHours()) + ":" + pad(sh.getMinutes());
    return labels.since.replace("{t}", text);
  }

  function render(t, flash) {
    var el = document.getElementById("tile-" + t.id);
    if (!el) return false;
    el.className = "tile st-" + t.status + (t.alarm ? " alarm" : "");
    var st = el.querySelector(".tile-state");
    st.textContent = labels[t.status] || t.status;
    st.dataset.status = t.status;
    el.querySelector(".tile-since").textContent = fmtSince(t.since);
    el.querySelector(".tile-user").textContent = t.user_present
      ? labels.user_org + "：" + (t.user_org || labels.unmapped) : "";
    el.querySelector(".tile-today").innerHTML = "";
    el.querySelector(".tile-today").append(labels.today + " ");
    var b = document.createElement("b");
    b.textContent = labels.hours.replace("{h}", Number(t.today_hours).toFixed(1));
    el.querySelector(".tile-today").append(b);
    if (flash) {
      el.classList.add("flash");
      setTimeout(function () { el.classList.remove("flash"); }, 800);
    }
    return true;
  }

  function connect() {
    var es = new EventSource("/api/v1/units/" + encodeURIComponent(unit) + "/live/stream");
    es.addEventListener("open", function () { status.textContent = status.dataset.ok; status.className = "live-status ok"; });
    es.addEventListener("snapshot", function (e) {
      var missing = false;
      JSON.parse(e.data).forEach(function (t) { if (!render(t, false)) missing = true; });
      if (missing) location.reload();  // an instrument was added
    });
    es.addEventListener("tile", function (e) { if (!render(JSON.parse(e.data), true)) location.reload(); });
    es.addEventListener("expired", function () { es.close(); location.href = "/login?next=" + encodeURIComponent(location.pathname); });
    es.addEventListener("error", function () { status.textContent = status.dataset.retry; status.className = "live-status"; });
  }
  connect();
})();
