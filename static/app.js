// pgtrail web view: the few things that need a script. Every page works without it.
// - Live mode: new entries from /live (server-sent events) are added to the top of the log.
// - Copy buttons for the revert SQL.
// - The filter form starts folded on narrow screens when no filter is set.
// - The match count grows with the entries live mode adds.
// - Times in UTC (as the server writes them) or in the browser's time zone, remembered;
//   the From and To fields follow, and are sent in UTC.
// - Last and From exclude each other: setting one clears the other.
// - The view's breakdown (facets and timeline, /breakdown) is loaded into the log page once it
//   is shown; without the script the page links to it.
// The HTML the live stream sends is rendered and escaped by the server's templates.
"use strict";

(function () {
  function startLive(status) {
    var src = status.getAttribute("data-src");
    var rows = document.getElementById("rows");
    if (!src || !rows || typeof EventSource === "undefined") {
      return;
    }
    var seen = 0;
    var max = 500;
    var es = new EventSource(src);
    es.addEventListener("entry", function (ev) {
      var msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (document.getElementById("e" + msg.id)) {
        return;
      }
      rows.insertAdjacentHTML("afterbegin", msg.html);
      var row = rows.firstElementChild;
      if (row) {
        row.classList.add("fresh");
      }
      while (rows.children.length > max) {
        rows.removeChild(rows.lastElementChild);
      }
      seen += 1;
      showTimes(row, isLocal());
      countUp(seen);
      status.textContent = "Live: " + seen + " new " + (seen === 1 ? "entry" : "entries") + " since the page was loaded.";
      var empty = document.querySelector(".empty");
      if (empty) {
        empty.hidden = true;
      }
    });
    es.addEventListener("open", function () {
      status.classList.remove("lost");
    });
    es.addEventListener("error", function () {
      status.classList.add("lost");
      status.textContent = "Live: connection lost, reconnecting…";
    });
  }

  // The count as the server wrote it, grown by the live entries (which match the same filters).
  var countText = null;
  function countUp(seen) {
    var count = document.getElementById("count");
    if (!count) {
      return;
    }
    if (countText === null) {
      countText = count.textContent;
    }
    var m = /^(more than |at least )?([\d,]+) (entry|entries)(.*)$/.exec(countText);
    if (!m) {
      return;
    }
    var total = parseInt(m[2].replace(/,/g, ""), 10) + seen;
    count.textContent = (m[1] || "") + total.toLocaleString("en-US") + " " + (total === 1 ? "entry" : "entries") + m[4];
  }

  // Time zones: the server writes UTC; the choice of local time is kept in localStorage.
  var TZ_KEY = "pgtrail.tz";
  function isLocal() {
    try {
      return window.localStorage.getItem(TZ_KEY) === "local";
    } catch (e) {
      return false;
    }
  }
  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }
  function formatAt(d, local) {
    if (local) {
      return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
        pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    }
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
  }
  // "2024-05-01 10:00[:03]" in UTC or local time; null for anything else (a date alone stays as typed).
  function parseAt(text, local) {
    var m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?$/.exec(text.trim());
    if (!m) {
      return null;
    }
    var a = [+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0)];
    return local ? new Date(a[0], a[1], a[2], a[3], a[4], a[5]) : new Date(Date.UTC(a[0], a[1], a[2], a[3], a[4], a[5]));
  }
  function zoneLabel() {
    var m = -new Date().getTimezoneOffset();
    var sign = m < 0 ? "-" : "+";
    m = Math.abs(m);
    return "UTC" + sign + pad(Math.floor(m / 60)) + ":" + pad(m % 60);
  }
  function showTimes(root, local) {
    if (!root || !root.querySelectorAll) {
      return;
    }
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      if (!t.hasAttribute("data-utc")) {
        t.setAttribute("data-utc", t.textContent);
      }
      var utc = t.getAttribute("data-utc");
      var d = new Date(t.getAttribute("datetime").replace(/(\.\d{3})\d+/, "$1"));
      if (!local || isNaN(d.getTime())) {
        t.textContent = utc;
        return;
      }
      var frac = (/\.\d+$/.exec(utc) || [""])[0];
      t.textContent = formatAt(d, true) + frac;
    });
  }
  // Moves the From and To fields from one zone to the other.
  function shiftFields(fromLocal, toLocal) {
    document.querySelectorAll("input.when-at").forEach(function (input) {
      var d = parseAt(input.value, fromLocal);
      if (d && !isNaN(d.getTime())) {
        input.value = formatAt(d, toLocal);
      }
    });
  }
  // The times under root, and the labels saying their zone.
  function showZoneIn(root, local) {
    showTimes(root, local);
    root.querySelectorAll(".tz").forEach(function (e) {
      e.textContent = local ? "(local, " + zoneLabel() + ")" : "(UTC)";
    });
  }
  function showZone(local) {
    showZoneIn(document, local);
    var button = document.getElementById("tz-toggle");
    if (button) {
      button.hidden = false;
      button.textContent = local ? "Local time" : "UTC";
      button.setAttribute("aria-pressed", local ? "true" : "false");
      button.title = local ? "Times are in this browser's time zone (" + zoneLabel() + "); switch to UTC" : "Times are in UTC; switch to this browser's time zone";
    }
  }
  function setupZones() {
    var local = isLocal();
    if (local) {
      shiftFields(false, true);
    }
    showZone(local);
    var button = document.getElementById("tz-toggle");
    if (button) {
      button.addEventListener("click", function () {
        var now = !isLocal();
        try {
          window.localStorage.setItem(TZ_KEY, now ? "local" : "utc");
        } catch (e) {
          return;
        }
        shiftFields(!now, now);
        showZone(now);
      });
    }
    // The server reads From and To as UTC.
    document.querySelectorAll("form.filters").forEach(function (form) {
      form.addEventListener("submit", function () {
        if (isLocal()) {
          shiftFields(true, false);
        }
      });
    });
  }

  // A range starts at Last or at From: choosing one clears the other.
  function setupRange() {
    var last = document.querySelector("form.filters select[name=last]");
    var from = document.querySelector("form.filters input[name=from]");
    if (!last || !from) {
      return;
    }
    last.addEventListener("change", function () {
      if (last.value) {
        from.value = "";
      }
    });
    from.addEventListener("input", function () {
      if (from.value.trim()) {
        last.value = "";
      }
    });
  }

  function setupCopy(button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target || !navigator.clipboard) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(target.textContent).then(function () {
        button.textContent = "Copied";
        button.classList.add("done");
        setTimeout(function () {
          button.textContent = "Copy";
          button.classList.remove("done");
        }, 1500);
      });
    });
  }

  // On a phone the filters would fill the screen: fold them unless some are set.
  function foldFilters() {
    var box = document.getElementById("filterbox");
    if (box && !box.querySelector(".active") && window.matchMedia("(max-width: 760px)").matches) {
      box.open = false;
    }
  }

  // The breakdown is counted apart so that the page never waits for it; a failure leaves the link.
  function loadBreakdown() {
    var slot = document.getElementById("breakdown");
    var src = slot && slot.getAttribute("data-src");
    if (!src || typeof fetch === "undefined") {
      return;
    }
    fetch(src, { credentials: "same-origin" })
      .then(function (res) {
        return res.ok ? res.text() : null;
      })
      .then(function (html) {
        if (html) {
          slot.innerHTML = html;
          // It comes in UTC, as the server writes every page.
          showZoneIn(slot, isLocal());
        }
      })
      .catch(function () {});
  }

  document.addEventListener("DOMContentLoaded", function () {
    foldFilters();
    loadBreakdown();
    setupZones();
    setupRange();
    var status = document.getElementById("live-status");
    if (status) {
      startLive(status);
    }
    document.querySelectorAll("button[data-copy]").forEach(setupCopy);
  });
})();
