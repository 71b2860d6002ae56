// Draw every chart figure with Plotly (served from the installed plotly package, see
// server/web/vendor.py); a bar that carries a link (customdata) opens it when clicked.
(function () {
  "use strict";
  if (typeof Plotly === "undefined") return; // the data tables under each chart stay readable

  function safeLink(h) {
    return typeof h === "string" && h.length > 0 && (h.charAt(0) === "?" || (h.charAt(0) === "/" && h.charAt(1) !== "/"));
  }

  function draw(fig) {
    var spec = JSON.parse(fig.getAttribute("data-plotly"));
    var el = fig.querySelector(".plot");
    var links = spec.data.some(function (tr) { return (tr.customdata || []).some(safeLink); });
    return Plotly.newPlot(el, spec.data, spec.layout, spec.config).then(function () {
      fig.classList.add("drawn");
      if (!links) return;
      fig.classList.add("linked");
      el.on("plotly_click", function (ev) {
        var p = ev.points && ev.points[0];
        if (p && safeLink(p.customdata)) window.location.href = p.customdata;
      });
    });
  }

  var figs = document.querySelectorAll("figure.chart[data-plotly]");
  Promise.all(Array.prototype.map.call(figs, draw)).then(function () {
    document.documentElement.setAttribute("data-charts", "drawn");
  }, function (err) {
    document.documentElement.setAttribute("data-charts", "failed");
    if (window.console) console.error("chart:", err);
  });
})();
