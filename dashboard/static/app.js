// pocketfleet dashboard: small enhancements; every page works without them.
(function () {
  "use strict";

  // Copy buttons: <button class="copy" data-copy="#input-or-pre">.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy");
    if (!button) return;
    var source = document.querySelector(button.dataset.copy);
    if (!source) return;
    var text = source.value !== undefined ? source.value : source.textContent;
    var status = button.nextElementSibling;
    var done = function (message) { if (status) status.textContent = message; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done("Copied"); }, function () { done("Press Ctrl+C to copy"); });
    } else if (source.select) {
      source.select();
      done(document.execCommand("copy") ? "Copied" : "Press Ctrl+C to copy");
    }
  });

  // Typed confirmation: the delete button stays disabled until the name is typed.
  function watchConfirm(form) {
    var input = form.querySelector("input[name=confirm]");
    var button = form.querySelector("button[type=submit]");
    if (!input || !button) return;
    var update = function () { button.disabled = input.value.trim() !== form.dataset.confirm; };
    input.addEventListener("input", update);
    update();
  }

  // Destructive forms ask first: <form data-confirm-submit="Question?">.
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset && event.target.dataset.confirmSubmit;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // Logs: pause polling while "Follow live" is off; keep the view at the end while following.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var follow = document.getElementById("follow");
    if (event.target.id === "logs" && follow && !follow.checked) event.preventDefault();
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.target.id === "logs") event.target.scrollTop = event.target.scrollHeight;
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-confirm]").forEach(watchConfirm);
    var logs = document.getElementById("logs");
    if (logs) logs.scrollTop = logs.scrollHeight;
  });
})();
