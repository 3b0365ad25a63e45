// Kennel dashboard: the live view of running turns (live.js). No inline script anywhere:
// the Content-Security-Policy allows only the dashboard's own files.
import { startLiveTurns } from "./live.js";

// After htmx's own start-up (its listener was registered first), so a turn that ends at once
// finds htmx ready to swap in the server's rendering.
document.addEventListener("DOMContentLoaded", () => startLiveTurns(document));
// Content htmx swaps in (a task re-rendered when a turn ends) may hold turns still running.
document.addEventListener("htmx:load", (event) => startLiveTurns(event.detail.elt));
