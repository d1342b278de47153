// aqueue dashboard: swaps in the fragments the server pushes (server-sent events).
// Without JavaScript the pages still work; they just don't update by themselves.
"use strict";
document.querySelectorAll("[data-stream]").forEach(function (element) {
  var source = new EventSource(element.dataset.stream);
  source.onmessage = function (event) {
    element.innerHTML = event.data;
    element.classList.remove("stale");
    element.dataset.updates = String(Number(element.dataset.updates || 0) + 1);
  };
  source.onerror = function () {
    element.classList.add("stale"); // the browser reconnects by itself
  };
});
