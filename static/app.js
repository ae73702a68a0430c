// pgtrail web view: the few things that need a script. Every page works without it.
// - Live mode: new entries from /live (server-sent events) are added to the top of the log.
// - Copy buttons for the revert SQL.
// - The filter form starts folded on narrow screens when no filter is set.
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

  document.addEventListener("DOMContentLoaded", function () {
    foldFilters();
    var status = document.getElementById("live-status");
    if (status) {
      startLive(status);
    }
    document.querySelectorAll("button[data-copy]").forEach(setupCopy);
  });
})();
