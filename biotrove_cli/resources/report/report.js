/* biotrove report: the photo gallery (filter, sort, pages) and print helpers.
   No library, no network: the photos and their thumbnails are the JSON inside each gallery. */
(function () {
  "use strict";

  function pct(v) {
    return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%";
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  function baseName(path) {
    var parts = String(path).split(/[\\/]/);
    return parts[parts.length - 1] || path;
  }

  var SCIENTIFIC = { genus: 1, species: 1 };

  function initGallery(root) {
    var data = JSON.parse(root.querySelector("script.gallery-data").textContent);
    var taxa = data.taxa;
    var photos = data.photos.map(function (p, i) {
      var top = p[3].length ? taxa[p[3][0][0]] : null;
      var hay = top ? top[3].concat([top[0], top[2]]).join("\n").toLowerCase() : "";
      return {
        i: i, path: p[0], rank: p[1], score: p[2], preds: p[3], thumb: p[4],
        w: p[5], h: p[6], thumbError: p[7], hay: hay, taxon: top ? top[3].join(" ") : "\uffff"
      };
    });
    var form = root.querySelector("form.filters");
    var list = root.querySelector("ol.cards");
    var status = root.querySelector(".status");
    var pageOf = root.querySelector(".page-of");
    var prev = root.querySelector('[data-page="prev"]');
    var next = root.querySelector('[data-page="next"]');
    var state = { taxon: "", rank: "", min: 0, max: 100, sort: "file", per: 96, page: 0 };
    var shown = photos;

    function read() {
      state.taxon = form.elements.taxon.value.trim().toLowerCase();
      state.rank = form.elements.rank.value;
      var lo = parseFloat(form.elements.min.value);
      var hi = parseFloat(form.elements.max.value);
      state.min = isNaN(lo) ? 0 : Math.max(0, Math.min(100, lo));
      state.max = isNaN(hi) ? 100 : Math.max(0, Math.min(100, hi));
      state.per = parseInt(form.elements.per.value, 10) || 96;
    }

    function keep(p) {
      if (state.rank && p.rank !== state.rank) return false;
      if (state.taxon && p.hay.indexOf(state.taxon) < 0) return false;
      var s = p.score === null ? null : 100 * p.score;
      if (state.min > 0 || state.max < 100) {
        if (s === null || s < state.min - 1e-9 || s > state.max + 1e-9) return false;
      }
      return true;
    }

    var ORDER = {
      file: function (a, b) { return a.i - b.i; },
      asc: function (a, b) { return (a.score === null) - (b.score === null) || a.score - b.score || a.i - b.i; },
      desc: function (a, b) { return (a.score === null) - (b.score === null) || b.score - a.score || a.i - b.i; },
      taxon: function (a, b) { return a.taxon < b.taxon ? -1 : a.taxon > b.taxon ? 1 : a.i - b.i; }
    };

    function card(p) {
      var li = el("li", "card");
      li.dataset.score = p.score === null ? "" : String(p.score);
      li.dataset.rank = p.rank;
      li.dataset.index = String(p.i);
      var fig = el("div", "thumb");
      if (p.thumb) {
        var img = el("img");
        img.src = "data:image/jpeg;base64," + p.thumb;
        img.alt = baseName(p.path);
        img.width = p.w;
        img.height = p.h;
        img.decoding = "async";
        fig.appendChild(img);
      } else {
        fig.appendChild(el("span", "nothumb", p.thumbError ? "no thumbnail (" + p.thumbError + ")" : "no thumbnail"));
      }
      li.appendChild(fig);
      var body = el("div", "body");
      if (p.preds.length) {
        var t = taxa[p.preds[0][0]];
        var head = el("p", "top");
        head.appendChild(el("span", "name" + (SCIENTIFIC[t[1]] ? " sci" : ""), t[0]));
        head.appendChild(el("span", "rank", t[1]));
        body.appendChild(head);
        if (t[2]) body.appendChild(el("p", "common", t[2]));
      } else {
        var none = el("p", "top");
        none.appendChild(el("span", "name", "no answer"));
        none.appendChild(el("span", "rank", "no rank reached"));
        body.appendChild(none);
      }
      var meter = el("div", "conf");
      meter.setAttribute("role", "meter");
      meter.setAttribute("aria-valuemin", "0");
      meter.setAttribute("aria-valuemax", "100");
      meter.setAttribute("aria-valuenow", p.score === null ? "0" : (100 * p.score).toFixed(1));
      meter.setAttribute("aria-label", "confidence");
      var fill = el("span", "fill");
      fill.style.width = (p.score === null ? 0 : Math.max(0, Math.min(100, 100 * p.score))) + "%";
      meter.appendChild(fill);
      meter.appendChild(el("span", "pct", pct(p.score) + (p.preds.length ? "" : " (best kingdom)")));
      body.appendChild(meter);
      if (p.preds.length) {
        // the lineage above the name (the name itself heads the card)
        var lineage = taxa[p.preds[0][0]][3].slice(0, -1).filter(function (x) { return x; });
        if (lineage.length) body.appendChild(el("p", "lineage", lineage.join(" › ")));
      }
      if (p.preds.length > 1) {
        var alts = el("ol", "alts");
        alts.start = 2;
        p.preds.slice(1).forEach(function (q) {
          var li2 = el("li");
          li2.appendChild(el("span", "alt-name", taxa[q[0]][0]));
          li2.appendChild(el("span", "alt-pct", pct(q[1])));
          alts.appendChild(li2);
        });
        body.appendChild(alts);
      }
      var file = el("p", "file", baseName(p.path));
      file.title = p.path;
      body.appendChild(file);
      li.appendChild(body);
      return li;
    }

    function render() {
      var pages = Math.max(1, Math.ceil(shown.length / state.per));
      state.page = Math.min(state.page, pages - 1);
      var start = state.page * state.per;
      var slice = shown.slice(start, start + state.per);
      var frag = document.createDocumentFragment();
      slice.forEach(function (p) { frag.appendChild(card(p)); });
      list.replaceChildren(frag);
      list.start = start + 1;
      status.textContent = shown.length
        ? "Showing " + (start + 1) + "–" + (start + slice.length) + " of " + shown.length +
          " photos" + (shown.length < photos.length ? " (" + photos.length + " in all)" : "")
        : "No photo matches (" + photos.length + " in all).";
      pageOf.textContent = "page " + (state.page + 1) + " of " + pages;
      prev.disabled = state.page === 0;
      next.disabled = state.page >= pages - 1;
      root.dataset.shown = String(shown.length);
    }

    function apply() {
      read();
      shown = photos.filter(keep).sort(ORDER[state.sort]);
      state.page = 0;
      render();
    }

    var timer = null;
    form.addEventListener("input", function (e) {
      clearTimeout(timer);
      timer = setTimeout(apply, e.target.name === "taxon" ? 120 : 0);
    });
    form.addEventListener("submit", function (e) { e.preventDefault(); apply(); });
    root.querySelectorAll("[data-sort]").forEach(function (b) {
      b.addEventListener("click", function () {
        state.sort = b.dataset.sort;
        root.querySelectorAll("[data-sort]").forEach(function (o) {
          o.setAttribute("aria-pressed", String(o === b));
        });
        apply();
      });
    });
    prev.addEventListener("click", function () { state.page -= 1; render(); list.scrollIntoView({ block: "nearest" }); });
    next.addEventListener("click", function () { state.page += 1; render(); root.scrollIntoView(); });
    apply();
  }

  document.querySelectorAll(".gallery").forEach(initGallery);
  // printing shows every folded panel
  var folded = [];
  window.addEventListener("beforeprint", function () {
    folded = Array.prototype.filter.call(document.querySelectorAll("details"), function (d) { return !d.open; });
    folded.forEach(function (d) { d.open = true; });
  });
  window.addEventListener("afterprint", function () {
    folded.forEach(function (d) { d.open = false; });
  });
  document.documentElement.dataset.ready = "1";
  if (window.performance && performance.mark) performance.mark("report-ready");
})();
