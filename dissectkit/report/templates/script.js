(function () {
  "use strict";
  function cellValue(row, idx, numeric) {
    var cell = row.cells[idx];
    var raw = cell.getAttribute("data-v");
    if (raw === null) raw = cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    var v = parseFloat(raw);
    return isNaN(v) ? null : v;
  }
  function sortBy(table, th) {
    var idx = th.cellIndex, numeric = th.getAttribute("data-type") === "num";
    var dir = th.classList.contains("asc") ? "desc" : "asc";
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(dir);
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var sign = dir === "asc" ? 1 : -1;
    rows.sort(function (a, b) {
      var va = cellValue(a, idx, numeric), vb = cellValue(b, idx, numeric);
      if (va === null || va === "") return (vb === null || vb === "") ? 0 : 1;
      if (vb === null || vb === "") return -1;
      return va < vb ? -sign : va > vb ? sign : 0;
    });
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r); });
    body.appendChild(frag);
  }
  function initBox(box) {
    var table = box.querySelector("table");
    if (!table) return;
    table.querySelectorAll("th").forEach(function (th) {
      th.addEventListener("click", function () { sortBy(table, th); });
    });
    var text = box.querySelector("input.filter"), cat = box.querySelector("select.catfilter");
    var count = box.querySelector(".count");
    var scope = box.closest("section") || document;
    var cards = {};
    scope.querySelectorAll(".card[data-unit]").forEach(function (c) { cards[c.getAttribute("data-unit")] = c; });
    function apply() {
      var q = text ? text.value.trim().toLowerCase() : "", c = cat ? cat.value : "", shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var ok = (!q || row.textContent.toLowerCase().indexOf(q) >= 0) &&
                 (!c || row.getAttribute("data-category") === c);
        row.hidden = !ok;
        if (ok) shown++;
        var card = cards[row.getAttribute("data-unit")];
        if (card) card.hidden = !ok;
      });
      if (count) count.textContent = shown + " shown";
    }
    if (text) text.addEventListener("input", apply);
    if (cat) cat.addEventListener("change", apply);
  }
  document.querySelectorAll("[data-filterable]").forEach(initBox);
  var toggle = document.getElementById("toggle-heat");
  if (toggle) toggle.addEventListener("change", function () { document.body.classList.toggle("noheat", !toggle.checked); });
})();
