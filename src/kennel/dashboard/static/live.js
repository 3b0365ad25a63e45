export function startLiveTurns() {}
