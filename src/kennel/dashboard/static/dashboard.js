// Kennel dashboard: the live view of running turns (see live.js) and nothing inline.
import { startLiveTurns } from "./live.js";

startLiveTurns(document);
