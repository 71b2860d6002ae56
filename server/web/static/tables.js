// Long report sections: a filter over the rows drawn (any cell's text), with the count shown.
(function () {
  "use strict";
  document.querySelectorAll("input.table-filter").forEach(function (input) {
    var section = input.closest("details");
    var rows = Array.prototype.slice.call(section.querySelectorAll("table tr")).slice(1);
    var count = section.querySelector(".filter-count");
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      var shown = 0;
      rows.forEach(function (r) {
        var hit = !q || r.textContent.toLowerCase().indexOf(q) >= 0;
        r.hidden = !hit;
        if (hit) shown += 1;
      });
      count.textContent = q ? input.dataset.count.replace("{shown}", shown) : "";
    });
  });
})();
