// The little the page needs beyond HTML: drag and drop, the Send confirmation, live progress.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Upload: a dropped file goes into the form's file input, and the form is sent.
  const upload = document.querySelector("form[data-upload]");
  if (upload) {
    const drop = upload.querySelector(".drop");
    const input = upload.querySelector("input[type=file]");
    for (const name of ["dragenter", "dragover"]) {
      drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
    }
    for (const name of ["dragleave", "drop"]) {
      drop.addEventListener(name, () => drop.classList.remove("over"));
    }
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        upload.requestSubmit();
      }
    });
    input.addEventListener("change", () => { if (input.files.length) upload.requestSubmit(); });
  }

  // A key only means something for Content and Subscription filter columns.
  for (const input of document.querySelectorAll("input[data-key-for]")) {
    const role = input.form.elements[input.dataset.keyFor];
    const keyed = () => {
      input.disabled = !["content", "subscription_filter"].includes(role.value);
    };
    role.addEventListener("change", keyed);
    keyed();
  }

  // Fields that only one matching mode uses are shown with it.
  const matching = document.querySelector("select[name=matching]");
  if (matching) {
    const shown = () => {
      for (const field of document.querySelectorAll("[data-for-matching]")) {
        field.hidden = field.dataset.forMatching !== matching.value;
      }
    };
    matching.addEventListener("change", shown);
    shown();
  }

  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }

  for (const button of document.querySelectorAll("[data-open]")) {
    const dialog = document.getElementById(button.dataset.open);
    button.addEventListener("click", () => {
      if (button.form.reportValidity()) dialog.showModal();
    });
    dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());
  }

  // Live progress: the server pushes the run's state; when the run ends, show Done.
  const live = document.querySelector("[data-live]");
  if (live) {
    const field = (name) => live.querySelector(`[data-field=${name}]`);
    const source = new EventSource(live.dataset.live);
    source.onmessage = (message) => {
      const state = JSON.parse(message.data);
      if (state.status !== "queued" && state.status !== "sending") {
        source.close();
        window.location.reload();
        return;
      }
      document.querySelector("[data-field=status]").textContent = state.status;
      field("queued").hidden = state.status !== "queued";
      field("queue_position").textContent = state.queue_position;
      field("stopping").hidden = !state.stopping;
      const progress = state.progress;
      if (!progress) return;
      if (progress.percent !== null) field("bar").value = progress.percent;
      for (const name of ["done", "ok", "failed", "rate", "left", "retries"]) {
        field(name).textContent = progress.text[name];
      }
      live.querySelector("[data-bad-above-zero]").classList.toggle("bad", progress.failed > 0);
      const errors = field("errors");
      errors.replaceChildren();
      if (progress.errors.length) {
        const title = document.createElement("h3");
        title.textContent = "Latest errors";
        const list = document.createElement("ul");
        list.className = "errors";
        for (const error of progress.errors) {
          const item = document.createElement("li");
          const code = document.createElement("code");
          code.textContent = error.error;
          item.append(code, ` ×${error.count}: ${error.text}`);
          list.append(item);
        }
        errors.append(title, list);
      }
    };
  }
});
